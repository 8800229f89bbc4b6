import { Fragment, type MouseEvent, type WheelEvent, useCallback, useEffect, useLayoutEffect, useRef, useState } from 'react';
import { ApiError, GatewayTimeout, api, errorMessage, isAbort, isBusy, isConversationGone, isDeletedConversationId, isTooManyStreams, isUnreachable, newConversationId, newGenerationId, parseEventId, replyFailed } from '../api/client';
import type { Conversation, Exchange, Message, Page } from '../api/types';
import { clearCreating, clearSent, keepChatToCreate, loadDraft, markCreating, markSent, markTaken, saveDraft, sentHere, sentMarks, takeChatToCreate, takeSentMarks, withUnsent, withUnsentMarks } from '../drafts';
import { useRetryWhileOut } from '../hooks/useRetryWhileOut';
import { pageIsLeaving } from '../pageLeaving';
import { Composer } from './Composer';
import { Markdown } from './Markdown';
import { MessageItem } from './MessageItem';

const PAGE_SIZE = 50;
/** After Stop, how often and how many times to look for the reply the server goes on to store. */
const RELOAD_DELAY_MS = 1000;
const RELOAD_ATTEMPTS = 8;
/** While the server cannot be reached, how often to try again to learn what became of a reply. */
const UNREACHABLE_RETRY_MS = 5000;
/**
 * After a send the server never answered (Stop before its answer, a proxy's 504), how long its
 * reply is looked for, and how often once the first polls are done: the server shows a reply in
 * progress from the moment it takes the message, but only once stored when its log could not be
 * written then, and a slow or retrying model may take this long to answer.
 */
const UNANSWERED_PATIENCE_MS = 45_000;
const UNANSWERED_RECHECK_MS = 3000;
/**
 * A message sent this long ago or less, found neither stored nor in progress after a reload, may
 * still reach the server: the reload cut its request, whose bytes may be on their way yet (a slow
 * upload, a buffering proxy). It is looked for again until then, not given back at once.
 */
const LATE_ARRIVAL_MS = 10_000;
const LATE_ARRIVAL_RECHECK_MS = 2000;
/** How long after a send other tabs are told of it, if the model has not answered by then. */
const ANNOUNCE_WAITING_AFTER_MS = 500;
/** How the alerts about a reply lost from view begin; they go once the stored reply shows. */
const LOST_PREFIX = 'Lost the';
/** Said in a conversation deleted elsewhere while it was open here. */
const DELETED_HERE = 'This conversation has been deleted. What you send now starts a new chat.';

interface Pending {
  /** Tells two sends of the same text apart. */
  key: number;
  user: string;
  reply: string;
  /**
   * "stopped" by the user, or "interrupted" when the connection to it was lost: either way the
   * reply is awaited from the server, which goes on and stores it. "stoppedUnanswered": stopped
   * before the server answered, so it may never have taken the message; "unanswered": a proxy
   * gave up waiting for the server's answer, which may have taken it all the same.
   */
  state: 'streaming' | 'stopped' | 'stoppedUnanswered' | 'unanswered' | 'interrupted';
  /** Streaming, its connection dropped and is being tried again (with `Last-Event-ID`). */
  reconnecting?: boolean;
}

interface UntakenSend {
  controller: AbortController;
  /** The user left its chat: it goes on unseen. */
  left: boolean;
  /** Its chat; null while a new chat is created for it. */
  conversation: string | null;
  comeBack?: () => void;
}

interface Props {
  conversationId: string | null;
  /**
   * Bumped by each click on New chat. Clicked in the empty chat itself, it starts that over as a
   * switch would: an old alert goes, and a first send still creating its chat goes on there unseen.
   */
  newChatClicks: number;
  /**
   * Creates a conversation (when sending with none selected) without selecting it. It starts as
   * "New chat" and takes its title from the first message once the server takes it, so a message
   * the server refuses does not leave a conversation named after it (one whose reply then fails
   * keeps the name until another message is the first the chat holds: its text goes back to the
   * box, most likely to be sent again). With the id given, which finds the conversation an
   * earlier try made if there is one.
   */
  onCreate: (id: string) => Promise<Conversation>;
  /** The conversation `onCreate` made for a send from here is taken by it: open it in place of the new chat. */
  onCreated: (id: string) => void;
  /** Something was stored in the conversation: move it to the top, maybe give it a title. */
  onActivity: (id: string, updatedAt: string, firstUserText?: string) => void;
  /**
   * The conversation's first message was loaded, or seen taken by the server (`seenTaken`: sent
   * here): a chat still called "New chat" takes its title from it, also when its first reply ended
   * while the user was elsewhere (or the tab was closed).
   */
  onFirstMessage: (id: string, firstUserText: string, seenTaken?: boolean) => void;
  /** The server no longer has the conversation (deleted in another tab): drop it from the list. */
  onGone: (id: string) => void;
  /** Counts exchanges another tab stored in the open conversation: each change fetches them. */
  storedElsewhere: number;
  /** Counts replies another tab began in the open conversation: each change follows the reply. */
  replyingElsewhere: number;
  /** The server took a message sent here and its reply began. */
  onReplying: (id: string) => void;
  /** The open conversation was deleted (in another tab, or here before Back led to it again). */
  deletedElsewhere: boolean;
  /** The server's limit on a message, in characters; null while unknown. */
  maxMessageChars: number | null;
}

type LoadState = { kind: 'idle' } | { kind: 'loading' } | { kind: 'ready' } | { kind: 'error'; error: unknown };

export function ConversationView({
  conversationId,
  newChatClicks,
  onCreate,
  onCreated,
  onActivity,
  onFirstMessage,
  onGone,
  storedElsewhere,
  replyingElsewhere,
  onReplying,
  deletedElsewhere,
  maxMessageChars,
}: Props) {
  const [messages, setMessages] = useState<Message[]>([]);
  const [nextCursor, setNextCursor] = useState<string | null>(null);
  const [load, setLoad] = useState<LoadState>({ kind: 'idle' });
  const [olderLoading, setOlderLoading] = useState(false);
  /**
   * Following the replies of this chat is refused for now: this browser (or the network it shares
   * an address with) has as many event streams open as the server allows. Said, so that a chat
   * whose reply runs elsewhere does not just look idle while the follow is asked again.
   */
  const [followRefused, setFollowRefused] = useState(false);
  const [olderError, setOlderError] = useState<string | null>(null);
  const [draft, setDraft] = useState(() => loadDraft(conversationId));
  const [pending, setPending] = useState<Pending | null>(null);
  /** Stopped replies still awaited after a later send took `pending`: they stay in view above it. */
  const [stopped, setStopped] = useState<Pending[]>([]);
  const [sendError, setSendError] = useState<string | null>(null);
  // The reply a screen reader is told about: only replies that arrive here, never pages loaded.
  const [announced, setAnnounced] = useState<Message | null>(null);
  /** The server no longer has this conversation: the next send starts a new one. */
  const [gone, setGone] = useState(false);

  const logRef = useRef<HTMLDivElement>(null);
  const inputRef = useRef<HTMLTextAreaElement>(null);
  const abortRef = useRef<AbortController | null>(null);
  /**
   * Sends in flight until the server takes their message (one per chat at most: a send shown
   * again holds its chat's Send). Leaving the conversation then must not cut one: a server still
   * reading it, or asking the assistant, would drop it with the connection. `comeBack` (once its
   * chat exists) shows it again, with Stop, when the user is back in its chat.
   */
  const untakenSends = useRef(new Set<UntakenSend>());
  /** The send not taken yet whose request `controller` makes, if it is one. */
  const untakenWith = (controller: AbortController | null) => [...untakenSends.current].find((u) => u.controller === controller);
  /** Waits for stopped replies to be stored; ended when the view switches conversation. */
  const waits = useRef(new Set<AbortController>());
  const stoppedRef = useRef(false);
  /**
   * The reply the stream read with `controller` shows: named by its send (which chose its id), or
   * by its first event when following one. `answered` once the server answered with its stream.
   */
  const runningReply = useRef<{ controller: AbortController; conversation: string; generation: string; stopAsked: boolean; answered: boolean } | null>(null);
  const noteRunning = (controller: AbortController, conversation: string, eventId: string) => {
    const generation = parseEventId(eventId)?.generation;
    if (generation === undefined) return;
    const running = runningReply.current;
    if (running?.controller !== controller) {
      runningReply.current = { controller, conversation, generation, stopAsked: false, answered: true };
    } else if (running.generation !== generation) {
      // A server that chose the id itself (one from before sends could choose it): Stop names its.
      running.generation = generation;
    }
  };
  const nextKey = useRef(0);
  const newPending = (user: string): Pending => ({ key: (nextKey.current += 1), user, reply: '', state: 'streaming' });
  /**
   * User messages already taken for the reply of a stopped send or of a message given back, so
   * that two sends of the same text each find their own exchange.
   */
  const claimed = useRef(new Set<string>());
  /** Bumped on every conversation switch so late answers for the old one are dropped. */
  const generation = useRef(0);
  /** A conversation this view just created itself: selecting it must not reset the send in flight. */
  const adoptedRef = useRef<string | null>(null);
  const stickToBottom = useRef(true);
  /** Where the view was last scrolled to, by the reader or here: leaving the bottom scrolls up from it. */
  const lastScrollTop = useRef(0);
  const scrollLogTo = useCallback((el: HTMLElement, top: number) => {
    el.scrollTop = top;
    lastScrollTop.current = el.scrollTop;
  }, []);
  /** Read far enough up that the newest messages are out of sight: a button takes the reader there. */
  const [awayFromLatest, setAwayFromLatest] = useState(false);
  const awayFromLatestRef = useRef(false);
  // Checked after every streamed piece: a state update that changes nothing would still cost a render.
  const showJumpToLatest = useCallback((away: boolean) => {
    if (awayFromLatestRef.current === away) return;
    awayFromLatestRef.current = away;
    setAwayFromLatest(away);
  }, []);
  const prependAnchor = useRef<{ height: number; top: number } | null>(null);
  const messagesRef = useRef<Message[]>(messages);
  messagesRef.current = messages;
  const pendingRef = useRef<Pending | null>(pending);
  pendingRef.current = pending;
  const nextCursorRef = useRef(nextCursor);
  nextCursorRef.current = nextCursor;
  const loadRef = useRef(load);
  loadRef.current = load;
  /** Set by the first load of a conversation: follow a reply in progress once the messages are in. */
  const followRef = useRef<(id: string, opening: boolean) => void>(() => undefined);
  /** The follow of a reply in flight (never a send's own stream), which hiding the tab ends. */
  const followingRef = useRef<AbortController | null>(null);
  /** A follow not made, or ended, while the tab was hidden: made once it is shown. */
  const followWhenShown = useRef(false);
  const shownId = useRef<string | null>(conversationId);
  // Saved as typed, so switching away and back, or reloading the page, loses nothing.
  useEffect(() => saveDraft(shownId.current, draft), [draft]);

  /** The conversation turned out deleted: the next send starts a new chat, and the list drops it. */
  const markGone = useCallback(
    (id: string) => {
      setGone(true);
      onGone(id);
    },
    [onGone],
  );

  const loadNewest = useCallback((id: string, follow = false) => {
    const gen = generation.current;
    setLoad({ kind: 'loading' });
    api.listMessages(id, { limit: PAGE_SIZE }).then(
      (page) => {
        if (gen !== generation.current) return;
        stickToBottom.current = true;
        // An exchange sent and answered while the page was on its way is newer than the page.
        const inPage = new Set(page.items.map((m) => m.id));
        setMessages((shown) => [...page.items, ...shown.filter((m) => !inPage.has(m.id))]);
        setNextCursor(page.next_cursor);
        setLoad({ kind: 'ready' });
        const first = page.items[0];
        if (page.next_cursor === null && first?.role === 'user') onFirstMessage(id, first.content);
        if (follow) followRef.current(id, true);
      },
      (error: unknown) => {
        if (gen !== generation.current) return;
        setLoad({ kind: 'error', error });
        // No such conversation (a link to a deleted one, or deleted on another device): a message
        // sent here starts a new chat, and the list no longer offers it.
        if (doesNotExist(error)) {
          markGone(id);
          // Sent here before a reload (or while the user was away) and deleted before its reply
          // was seen: the text comes back, where a send starts a new chat with it.
          const unseen = takeSentMarks(id);
          if (unseen.length > 0) {
            setDraft(withUnsentMarks(unseen)(loadDraft(id)));
            setSendError(
              unseen.length === 1
                ? 'The message you sent here before it was deleted is back in the message box: sending it starts a new chat.'
                : `The ${unseen.length} messages you sent here before it was deleted are back in the message box: sending them starts a new chat.`,
            );
          }
        }
      },
    );
  }, [onFirstMessage, markGone]);
  const loadAgain = useCallback(() => {
    if (conversationId !== null) loadNewest(conversationId, true);
  }, [conversationId, loadNewest]);
  useRetryWhileOut(load.kind === 'error' ? load.error : null, load.kind === 'ready', loadAgain);

  useEffect(() => {
    // Taken whatever comes: a chat left before it was taken in here must load when opened later.
    const adopted = adoptedRef.current;
    adoptedRef.current = null;
    if (conversationId !== null && conversationId === adopted) {
      shownId.current = conversationId;
      return;
    }
    generation.current += 1;
    shownId.current = conversationId;
    const untaken = untakenWith(abortRef.current);
    if (untaken) untaken.left = true;
    else abortRef.current?.abort();
    abortRef.current = null;
    for (const waiting of waits.current) waiting.abort();
    waits.current.clear();
    setMessages([]);
    setNextCursor(null);
    setPending(null);
    setStopped([]);
    claimed.current.clear();
    setAnnounced(null);
    setSendError(noticesOnReturn.current.get(conversationId) ?? null);
    noticesOnReturn.current.delete(conversationId);
    setGone(false);
    setOlderError(null);
    setOlderLoading(false);
    setFollowRefused(false);
    setDraft(loadDraft(conversationId));
    if (conversationId === null) setLoad({ kind: 'ready' });
    else loadNewest(conversationId, true);
    // Back while the model has not answered a message sent here: it shows, "Thinking…", with Stop,
    // and its reply streams here through the send itself (the follow the load asks for then finds
    // a reply shown already, and gives way).
    if (conversationId !== null) [...untakenSends.current].find((u) => u.left && u.conversation === conversationId)?.comeBack?.();
  }, [conversationId, newChatClicks, loadNewest]);

  // Another tab stored an exchange here: fetch the newest page and add what is new. While a reply
  // of this tab is in flight (streaming, or stopped and awaited) the fetch is owed until it ends,
  // so this tab's own exchange and the other's both end up shown, in the server's order.
  const fetchedElsewhere = useRef(0);
  const idle = pending === null && stopped.length === 0;
  useEffect(() => {
    const id = shownId.current;
    if (fetchedElsewhere.current === storedElsewhere || !idle || id === null) return;
    fetchedElsewhere.current = storedElsewhere;
    // refreshNewest reads only refs and setters: no dependency of its own.
    refreshNewest(id);
  }, [storedElsewhere, idle]);

  // Another tab's reply began here: follow it, as on opening the conversation, unless a reply of
  // this tab is in flight (its own follow, once it ends, asks for any other in progress).
  const followedElsewhere = useRef(0);
  useEffect(() => {
    const id = shownId.current;
    if (followedElsewhere.current === replyingElsewhere || id === null) return;
    followedElsewhere.current = replyingElsewhere;
    if (idle && load.kind === 'ready') followRef.current(id, false);
  }, [replyingElsewhere, idle, load.kind]);

  // A tab in the background follows no reply. Browsers give a site six connections over HTTP/1.1,
  // shared by all its tabs: replies followed in several tabs would take them all (a Stop or a
  // reload would then wait for a reply to end), and each counts against the server's streams per
  // client. Shown again, the tab reads what it missed and follows a reply still running from its
  // start.
  useEffect(() => {
    const onVisibility = () => {
      const id = shownId.current;
      if (document.hidden) {
        const following = followingRef.current;
        if (following === null) return;
        followWhenShown.current = true;
        following.abort();
        setPending(null);
      } else if (followWhenShown.current && id !== null) {
        followWhenShown.current = false;
        // refreshNewest reads only refs and setters: no dependency of its own.
        refreshNewest(id);
      }
    };
    document.addEventListener('visibilitychange', onVisibility);
    return () => document.removeEventListener('visibilitychange', onVisibility);
  }, []);

  // Deleted while open here (in another tab), or opened again with Back after its deletion: say
  // so, and let the next send start a new chat.
  useEffect(() => {
    if (!deletedElsewhere) return;
    setGone(true);
    setSendError(DELETED_HERE);
  }, [deletedElsewhere, conversationId]);

  // Abort a stream in flight when the view goes away (the server still stores the reply), and
  // drop whatever answers and timers are still to come for it.
  useEffect(
    () => () => {
      generation.current += 1;
      abortRef.current?.abort();
      for (const waiting of waits.current) waiting.abort();
    },
    [],
  );

  /** Set when the older messages' button had keyboard focus as its page came: the focus stays near. */
  const refocusOlder = useRef(false);
  const loadOlder = useCallback(() => {
    if (!conversationId || !nextCursor || olderLoading) return;
    const gen = generation.current;
    setOlderLoading(true);
    setOlderError(null);
    const focusedThere = () => document.activeElement?.closest('.older') != null;
    // The newest page may take the place of what is shown meanwhile (see refreshNewest), with a
    // cursor of its own: a page older than the old one's would then leave a gap.
    const before = nextCursor;
    api.listMessages(conversationId, { limit: PAGE_SIZE, before }).then(
      (page) => {
        if (gen !== generation.current) return;
        if (nextCursorRef.current !== before) {
          setOlderLoading(false);
          return;
        }
        refocusOlder.current = focusedThere();
        const el = logRef.current;
        if (el) prependAnchor.current = { height: el.scrollHeight, top: el.scrollTop };
        setMessages((m) => {
          const known = new Set(m.map((x) => x.id));
          return [...page.items.filter((x) => !known.has(x.id)), ...m];
        });
        setNextCursor(page.next_cursor);
        setOlderLoading(false);
      },
      (error: unknown) => {
        if (gen !== generation.current) return;
        refocusOlder.current = focusedThere();
        setOlderLoading(false);
        setOlderError(errorMessage(error));
      },
    );
  }, [conversationId, nextCursor, olderLoading]);

  // Keep the view still when older messages are put above, or follow the bottom when it was there.
  useLayoutEffect(() => {
    const el = logRef.current;
    if (!el) return;
    const anchor = prependAnchor.current;
    if (anchor) {
      prependAnchor.current = null;
      scrollLogTo(el, anchor.top + (el.scrollHeight - anchor.height));
    } else if (stickToBottom.current) {
      scrollLogTo(el, el.scrollHeight);
    }
    // A reply growing below the view moves the newest words away without a scroll.
    showJumpToLatest(isAwayFromLatest(el));
  }, [messages, pending, showJumpToLatest, scrollLogTo]);

  // The button gives way to Retry, or goes with the oldest page: the focus goes to what took its
  // place, or to the messages, instead of falling back to the page. A layout effect, after the one
  // above: a passive one pending from an earlier render would take the page's focus before the page
  // is shown; and the view is kept still before the focus moves, so the focus can be scrolled to.
  useLayoutEffect(() => {
    if (!refocusOlder.current) return;
    refocusOlder.current = false;
    const log = logRef.current;
    (log?.querySelector<HTMLElement>('.older button') ?? log)?.focus();
  }, [messages, olderError]);

  // The view getting shorter (a smaller window, a phone's keyboard opening), or a message taller
  // with no change of its own here (a reply's markdown is drawn in a deferred render, a whole
  // code block or table at once), keeps the newest message in sight when the bottom was.
  useEffect(() => {
    const el = logRef.current;
    if (!el || typeof ResizeObserver === 'undefined') return;
    const observer = new ResizeObserver(() => {
      if (stickToBottom.current) scrollLogTo(el, el.scrollHeight);
      showJumpToLatest(isAwayFromLatest(el));
    });
    observer.observe(el);
    for (const child of el.children) observer.observe(child);
    const children = new MutationObserver((changes) => {
      for (const change of changes) {
        for (const node of change.addedNodes) if (node instanceof Element) observer.observe(node);
        for (const node of change.removedNodes) if (node instanceof Element) observer.unobserve(node);
      }
    });
    children.observe(el, { childList: true });
    return () => {
      children.disconnect();
      observer.disconnect();
    };
  }, [showJumpToLatest, scrollLogTo]);

  // A first page too short to scroll cannot be scrolled up: fetch the next older page right away.
  useEffect(() => {
    const el = logRef.current;
    if (el && load.kind === 'ready' && nextCursor && !olderLoading && !olderError && el.scrollHeight <= el.clientHeight) loadOlder();
  }, [load, nextCursor, olderLoading, olderError, loadOlder, messages]);

  const onScroll = () => {
    const el = logRef.current;
    if (!el) return;
    // Only a scroll up leaves the bottom. The messages growing below the view also move the bottom
    // away, when a render lands between a scroll to the bottom and its event: that is no reader
    // scrolling away, and the observer above brings the bottom back.
    // A pixel's slack: positions are fractional at some zoom levels.
    const movedUp = el.scrollTop < lastScrollTop.current - 1;
    lastScrollTop.current = el.scrollTop;
    if (distanceFromLatest(el) < 48) stickToBottom.current = true;
    else if (movedUp) stickToBottom.current = false;
    showJumpToLatest(isAwayFromLatest(el));
    if (el.scrollTop < 120) loadOlder();
  };

  const jumpToLatest = (event: MouseEvent<HTMLButtonElement>) => {
    const el = logRef.current;
    if (!el) return;
    const focused = document.activeElement === event.currentTarget;
    scrollLogTo(el, el.scrollHeight);
    stickToBottom.current = true;
    showJumpToLatest(false);
    // The button goes: a focus it had goes to the message box, next to the newest message (in the
    // messages, the next Tab would go to their top, "Load older messages"). A tap that did not
    // focus it (Safari) leaves the focus where it was.
    if (focused) inputRef.current?.focus();
  };

  /** The wheel over the button (which is not in the messages) scrolls them, as it does around it. */
  const scrollLogBy = (event: WheelEvent) => {
    const el = logRef.current;
    // With Ctrl (a trackpad's pinch, too) the wheel zooms the page.
    if (!el || event.ctrlKey) return;
    const unit = event.deltaMode === 1 ? WHEEL_LINE_PX : event.deltaMode === 2 ? el.clientHeight : 1;
    el.scrollBy({ top: event.deltaY * unit, left: event.deltaX * unit });
  };

  /** Takes a stopped reply out of view: it is stored and shown, or given back. */
  const dropStopped = (key: number) => {
    setPending((p) => (p?.state !== 'streaming' && p?.key === key ? null : p));
    setStopped((all) => all.filter((p) => p.key !== key));
  };

  /**
   * Takes the first exchange of `text` in `fresh` that no other send has taken, if there is one:
   * its user message directly followed by a reply.
   */
  const claimExchange = (fresh: Message[], text: string): boolean => {
    const at = fresh.findIndex(
      (m, i) => m.role === 'user' && m.content === text && fresh[i + 1]?.role === 'assistant' && !claimed.current.has(m.id),
    );
    const user = fresh[at];
    if (user === undefined) return false;
    claimed.current.add(user.id);
    return true;
  };

  /**
   * Shows the newest page, with the reply to `text` that was stopped in it, announces that reply
   * (unless it was there when the conversation was opened), drops its stopped placeholder (`key`,
   * if it had one), and moves the conversation up in the list (naming a "New chat" whose first
   * exchange this is).
   */
  const showStored = (id: string, text: string, page: Page<Message>, announce: boolean, key?: number) => {
    const newest = page.items;
    // A lost connection was reported while waiting; the reply it lost is here now. Any other
    // alert (a later send refused) stays.
    setSendError((e) => (e?.startsWith(LOST_PREFIX) ? null : e));
    setMessages((m) => withNewest(m, newest));
    if (loadRef.current.kind !== 'ready') {
      // The messages could not be loaded when the conversation opened: this newest page is them.
      setNextCursor(page.next_cursor);
      setLoad({ kind: 'ready' });
    }
    const reply = replyTo(newest, text);
    // A reply that was on the page already is not news.
    if (reply && announce && !messagesRef.current.some((m) => m.id === reply.id)) setAnnounced(reply);
    if (key !== undefined) dropStopped(key);
    const last = newest[newest.length - 1];
    const first = newest[0];
    const firstUserText = page.next_cursor === null && first?.role === 'user' ? first.content : undefined;
    if (last) onActivity(id, last.created_at, firstUserText);
    clearSent(id, text);
  };

  /**
   * After Stop or a lost connection: the server finishes and stores the exchange, so fetch it once
   * it is there. A short reply is there within a few polls; a longer one is waited for by following
   * its generation silently to its end. When it ends without a stored reply (the assistant failed,
   * or the server restarted mid-reply and lost it), the user's text goes back into the composer of
   * the tab that sent it; another tab that watched the reply only says so. `unanswered`, when the
   * server never answered the send, says why nothing was stored if nothing was.
   */
  const reloadAfterStop = (id: string, known: Set<string>, lastEventId: string | null, unanswered?: string) => {
    const began = Date.now();
    const gen = generation.current;
    const waiting = new AbortController();
    waits.current.add(waiting);
    const text = pendingRef.current?.user ?? '';
    const key = pendingRef.current?.key;
    const ours = sentHere(id, text);
    // Other exchanges may be stored meanwhile (a message sent after Stop, maybe of the same text):
    // only this text's user message followed by a reply, not taken by another send, is this one.
    const isIn = (fresh: Message[]) => claimExchange(fresh, text);
    let attempt = 0;
    let ended: unknown = null;
    /** Found stored (and claimed), or its generation ended with `done`. */
    let storedForSure = false;
    // Out of reach for longer than a few polls: say so (a later send's alert stays), and go on
    // waiting, since the server may still store the reply.
    const stillWaiting = (err: unknown) =>
      setSendError((e) =>
        e === null || e.startsWith(LOST_PREFIX)
          ? `${LOST_PREFIX} way to the reply for now: ${sentence(errorMessage(err))} Trying again; it shows here once stored.`
          : e,
      );
    const later = (step: () => void, ms: number) =>
      setTimeout(() => {
        if (gen === generation.current && !waiting.signal.aborted) step();
      }, ms);
    const settle = (page: Page<Message>) => {
      waits.current.delete(waiting);
      const newest = page.items;
      // Ended, another reply may still run (one sent before this, or after it): follow it.
      const next = () => {
        if (waits.current.size === 0) followRef.current(id, false);
      };
      if (storedForSure || isIn(newest.filter((m) => !known.has(m.id)))) {
        showStored(id, text, page, true, key);
        next();
        return;
      }
      // Whatever else was stored meanwhile (another tab's exchanges) is still shown.
      setMessages((m) => withNewest(m, newest));
      if (key !== undefined) dropStopped(key);
      if (ours) {
        clearSent(id, text);
        setDraft(withUnsent(text));
      }
      if (ended !== null && isConversationGone(ended)) {
        // Deleted (in another tab, say) while the reply was awaited: nothing was stored.
        markGone(id);
        setSendError(ours ? whySendFailed(ended) : DELETED_HERE);
        next();
        return;
      }
      const why =
        ended === null
          ? (unanswered ?? 'The reply was lost before it was stored (the server may have restarted).')
          : replyFailed(ended)
            ? whyNothingStored(ended)
            : `Could not fetch the reply: ${sentence(errorMessage(ended))}`;
      setSendError(ours ? `${why} Your message is back in the message box.` : why);
      // A chat whose stopped first message was lost is named after the first one stored.
      const first = newest[0];
      if (page.next_cursor === null && first?.role === 'user') onFirstMessage(id, first.content);
      next();
    };
    const check = (final: boolean) => {
      attempt += 1;
      api.listMessages(id, { limit: PAGE_SIZE }).then(
        (page) => {
          if (gen !== generation.current || waiting.signal.aborted) return;
          if (final) settle(page);
          else if (isIn(page.items.filter((m) => !known.has(m.id)))) {
            storedForSure = true;
            settle(page);
          } else if (attempt < RELOAD_ATTEMPTS) later(() => check(false), RELOAD_DELAY_MS);
          else follow();
        },
        (err: unknown) => {
          if (gen !== generation.current || waiting.signal.aborted) return;
          if (isUnreachable(err) || isBusy(err) || attempt < RELOAD_ATTEMPTS) {
            if (attempt >= RELOAD_ATTEMPTS) stillWaiting(err);
            later(() => check(final), attempt < RELOAD_ATTEMPTS ? RELOAD_DELAY_MS : UNREACHABLE_RETRY_MS);
          } else {
            ended = err;
            settle({ items: [], next_cursor: null });
          }
        },
      );
    };
    const follow = () => {
      api.followStream(id, { signal: waiting.signal, lastEventId }).then(
        (exchange) => {
          // Followed by its own event id, the exchange is this reply's. Stopped before its first
          // event, the wait followed "the reply in progress", which may be another send's.
          const own =
            exchange !== null &&
            (lastEventId !== null || (exchange.user_message.content === text && !claimed.current.has(exchange.user_message.id)));
          if (own) {
            storedForSure = true;
            claimed.current.add(exchange.user_message.id);
          }
          // Nothing in progress: a send the server never answered may still wait for the model's
          // first words.
          if (exchange === null && unanswered !== undefined && Date.now() - began < UNANSWERED_PATIENCE_MS) {
            later(() => check(false), UNANSWERED_RECHECK_MS);
            return;
          }
          check(true);
        },
        (err: unknown) => {
          if (isAbort(err)) return;
          if (isUnreachable(err) || isBusy(err)) {
            // Look for the stored reply before following again: the stream may stay out of
            // reach (its log down) while the list has the reply already.
            stillWaiting(err);
            later(() => check(false), UNREACHABLE_RETRY_MS);
            return;
          }
          ended = err;
          check(true);
        },
      );
    };
    later(() => check(false), RELOAD_DELAY_MS);
  };

  /** Why text is back in the message box of a chat not shown when it came back: said on opening it. */
  const noticesOnReturn = useRef(new Map<string | null, string>());

  /**
   * Puts text that was not sent back where it was written, saying why: the composer if that
   * conversation is shown, else its saved draft, and the notice once it is opened again.
   */
  const keepDraft = (convId: string | null, text: string, notice: string) => {
    if (shownId.current === convId) {
      setDraft(withUnsent(text));
      setSendError(notice);
    } else {
      saveDraft(convId, withUnsent(text)(loadDraft(convId)));
      noticesOnReturn.current.set(convId, notice);
    }
  };

  /** Adds what the newest page has that is not shown yet; older pages already loaded stay. */
  const refreshNewest = (id: string) => {
    // Not loaded (it failed, the server out of reach): load it as on opening, Retry and all,
    // following a reply in progress.
    if (loadRef.current.kind === 'error') {
      loadNewest(id, true);
      return;
    }
    const gen = generation.current;
    const newestBefore = messagesRef.current.at(-1)?.id;
    api.listMessages(id, { limit: PAGE_SIZE }).then(
      (page) => {
        if (gen !== generation.current) return;
        const oldest = page.items[0];
        if (page.next_cursor !== null && oldest !== undefined && !messagesRef.current.some((m) => m.id === oldest.id)) {
          // More came meanwhile than a page holds: the newest page no longer joins what is shown.
          // It takes its place, with what this tab stored below the newest shown since the read
          // began (not an older page that came meanwhile), and what lies between loads on
          // scrolling up, as on opening.
          stickToBottom.current = true;
          const inPage = new Set(page.items.map((m) => m.id));
          setMessages((m) => {
            const at = newestBefore === undefined ? -1 : m.findIndex((x) => x.id === newestBefore);
            const storedSince = newestBefore === undefined ? m : at === -1 ? [] : m.slice(at + 1);
            return [...page.items, ...storedSince.filter((x) => !inPage.has(x.id))];
          });
          setNextCursor(page.next_cursor);
        } else setMessages((m) => withNewest(m, page.items));
        // A reply running now (another device's) shows, as on opening.
        followRef.current(id, true);
      },
      (error: unknown) => {
        // Deleted on another device while open here: say so, as a deletion in another tab does.
        if (gen !== generation.current || !doesNotExist(error)) return;
        markGone(id);
        setSendError(DELETED_HERE);
      },
    );
  };

  /**
   * No reply in progress (any more) while this tab still holds the mark of a message it sent here:
   * its reply ended while the user was elsewhere, the page was reloaded, or the connection was
   * down. Stored, it shows; otherwise nothing was stored (the assistant failed, or the server
   * restarted), and the text goes back into the message box. A send the server has not taken yet
   * decides this itself. A reply found on opening the conversation is not announced: it was
   * there already, like the rest of the page.
   */
  const recoverSent = (id: string, onOpening: boolean) => {
    // A send to this conversation the server has not taken yet decides for itself.
    if (sentMarks(id).length === 0 || [...untakenSends.current].some((u) => u.conversation === id)) return;
    const gen = generation.current;
    api.listMessages(id, { limit: PAGE_SIZE }).then(
      (page) => {
        // A send or a wait begun meanwhile decides for itself.
        if (gen !== generation.current || abortRef.current !== null || waits.current.size > 0) return;
        let givenBack = 0;
        let mayArrive = false;
        // Newest first, so that texts given back end up in the box in the order they were sent.
        for (const { text, after, untakenSince } of sentMarks(id).reverse()) {
          // Only a reply stored after what was shown at the send is this one's (the same text may
          // have been sent and answered before).
          const newer = page.items.slice(page.items.findIndex((m) => m.id === after) + 1);
          if (claimExchange(newer, text)) {
            showStored(id, text, page, !onOpening);
          } else if (untakenSince !== undefined && Date.now() - untakenSince < LATE_ARRIVAL_MS) {
            mayArrive = true;
          } else {
            clearSent(id, text);
            setDraft(withUnsent(text));
            givenBack += 1;
          }
        }
        setMessages((m) => withNewest(m, page.items));
        if (mayArrive) {
          // Taken late, its reply is then in progress: follow it, or look here again.
          setTimeout(() => {
            if (gen === generation.current && abortRef.current === null && waits.current.size === 0) followRef.current(id, onOpening);
          }, LATE_ARRIVAL_RECHECK_MS);
        }
        if (givenBack === 1) {
          setSendError(
            'The reply to a message you sent here was not stored (the message did not reach the server, the assistant failed, or the server restarted). Your message is back in the message box.',
          );
        } else if (givenBack > 1) {
          setSendError(
            `The replies to ${givenBack} of your messages here were not stored (they did not reach the server, the assistant failed, or the server restarted). They are back in the message box.`,
          );
        }
      },
      () => undefined,
    );
  };

  /**
   * A reply this tab watched (another tab sent it) ended while reconnecting and its events are
   * gone: the newest page shows it once stored; if it is not there, say so (giving the text back
   * is the sending tab's to do).
   */
  const confirmStored = (id: string, text: string, known: Set<string>) => {
    const gen = generation.current;
    api.listMessages(id, { limit: PAGE_SIZE }).then(
      (page) => {
        if (gen !== generation.current) return;
        setMessages((m) => withNewest(m, page.items));
        if (!claimExchange(page.items.filter((m) => !known.has(m.id)), text)) {
          setSendError('The reply shown was lost before it was stored (the server may have restarted).');
        }
      },
      () => undefined,
    );
  };

  /** Appends a stored exchange, unless (part of) it is already shown, and announces its reply. */
  const addExchange = (exchange: Exchange) => {
    setMessages((m) => {
      const have = new Set(m.map((x) => x.id));
      return [...m, ...[exchange.user_message, exchange.assistant_message].filter((x) => !have.has(x.id))];
    });
    setAnnounced(exchange.assistant_message);
  };

  /**
   * Follows a reply in progress in the conversation just opened (`GET .../stream`), e.g. after a
   * reload or on coming back to it: shows the user's message from the `start` event and the reply
   * so far, then streams the rest with Stop, exactly like a reply to a message sent here.
   * `afterRefusal`: asked again after a refusal (429, 503, out of reach), during which a reply
   * may have come and been stored without this tab hearing of it.
   */
  const followReply = (convId: string, opening: boolean, afterRefusal = false) => {
    // A reply being waited for after Stop or a lost connection is shown, or given back, by that
    // wait; a second way to it would give the text back twice.
    if (abortRef.current || waits.current.size > 0) return;
    if (document.hidden) {
      followWhenShown.current = true;
      return;
    }
    const controller = new AbortController();
    abortRef.current = controller;
    followingRef.current = controller;
    stoppedRef.current = false;
    const gen = generation.current;
    let shown = false;
    let userText = '';
    let known = new Set<string>();
    let lastEventId: string | null = null;
    /**
     * Ended: another reply may be running in the conversation too (a send before a Stop); asked
     * again after this many ms, if set.
     */
    let followNextAfter: number | null = null;
    api
      .followStream(convId, {
        signal: controller.signal,
        onEventId: (eventId) => {
          lastEventId = eventId;
          noteRunning(controller, convId, eventId);
          if (gen === generation.current) {
            setPending(connectedAgain);
            setFollowRefused(false);
          }
        },
        onReconnect: () => {
          if (gen === generation.current) setPending(reconnecting);
        },
        onStart: (start) => {
          if (gen !== generation.current) return;
          shown = true;
          userText = start.content;
          known = new Set(messagesRef.current.map((m) => m.id));
          stickToBottom.current = true;
          // Following from the first event again: replace whatever was shown, never append to it.
          setPending(newPending(start.content));
        },
        onDelta: (delta) => {
          if (gen !== generation.current) return;
          setPending((p) => (p ? { ...p, reply: p.reply + delta } : p));
        },
      })
      .then(
        (exchange) => {
          if (gen !== generation.current) return;
          setFollowRefused(false);
          if (exchange) {
            // The first exchange of a fresh "New chat" names it, as when sent from here.
            const ids = new Set([exchange.user_message.id, exchange.assistant_message.id]);
            const first = nextCursorRef.current === null && messagesRef.current.every((m) => ids.has(m.id));
            addExchange(exchange);
            setPending(null);
            // A wait that found it stored has cleared its mark already; another of the same text stays.
            if (!claimed.current.has(exchange.user_message.id)) clearSent(convId, exchange.user_message.content);
            claimed.current.add(exchange.user_message.id);
            onActivity(convId, exchange.assistant_message.created_at, first ? exchange.user_message.content : undefined);
            followNextAfter = 0;
          } else if (shown) {
            // The reply ended while reconnecting and its events are gone. If this tab sent it,
            // following again ends, once no reply runs, in showing it or giving the text back;
            // a tab that only watched it says when it was not stored.
            setPending(null);
            if (!sentHere(convId, userText)) confirmStored(convId, userText, known);
            // Not at once: behind replicas with logs of their own, the next ask may find the
            // reply again on the replica running it.
            followNextAfter = RELOAD_DELAY_MS;
          } else if (afterRefusal) {
            // Reads what came while refused (from another device, say), and asks once more.
            refreshNewest(convId);
          } else {
            recoverSent(convId, opening);
          }
        },
        (err: unknown) => {
          if (gen !== generation.current) return;
          if (isAbort(err)) {
            if (stoppedRef.current && shown) {
              setPending((p) => (p ? { ...p, state: 'stopped' } : p));
              reloadAfterStop(convId, new Set(messagesRef.current.map((m) => m.id)), lastEventId);
            }
            return;
          }
          if (!shown) {
            // Refused for the moment (429, 503) or out of reach: whether a reply is in progress
            // is not known, so ask again while the conversation stays open. Anything else (a
            // server without the route) means nothing to follow.
            setFollowRefused(isTooManyStreams(err));
            if (isBusy(err) || isUnreachable(err)) {
              setTimeout(() => {
                if (gen === generation.current) followReply(convId, opening, true);
              }, retryDelayMs(err));
            }
            return;
          }
          if (replyFailed(err)) {
            // Nothing was stored (the assistant failed, or the conversation was deleted), so the
            // message goes back where it was written (this tab, if it sent it before a reload),
            // as when it fails while sent here.
            setPending(null);
            const ours = sentHere(convId, userText);
            if (ours) {
              clearSent(convId, userText);
              setDraft(withUnsent(userText));
            }
            if (isConversationGone(err)) {
              markGone(convId);
              setSendError(ours ? whySendFailed(err) : DELETED_HERE);
            } else {
              const why = whyNothingStored(err);
              setSendError(ours ? `${why} Your message is back in the message box.` : why);
            }
            followNextAfter = 0;
            return;
          }
          // Out of reach: the server still finishes and stores the reply, so wait for it there.
          setPending((p) => (p ? { ...p, state: 'interrupted' } : p));
          setSendError(`${LOST_PREFIX} reply in progress: ${errorMessage(err)}`);
          reloadAfterStop(convId, new Set(messagesRef.current.map((m) => m.id)), lastEventId);
        },
      )
      .finally(() => {
        if (abortRef.current === controller) abortRef.current = null;
        if (followingRef.current === controller) followingRef.current = null;
        const after = followNextAfter;
        if (after === null) return;
        setTimeout(() => {
          if (gen === generation.current) followReply(convId, false);
        }, after);
      });
  };
  followRef.current = followReply;

  const send = async () => {
    const text = draft;
    if (text.trim() === '') return;
    if (abortRef.current) {
      // A reply is streaming (Stop is shown), or the check for one in progress is still out.
      if (pendingRef.current) return;
      abortRef.current.abort();
      abortRef.current = null;
    }
    // Where the text was written: if the user leaves before the server takes it, it waits there.
    const writtenIn = conversationId;
    // A conversation deleted meanwhile (in another tab) is not sent to again: a new one starts.
    const startsNew = gone || conversationId === null;
    // The messages could not be loaded, or are not in yet: none shown does not mean none stored.
    const historyUnknown = !startsNew && load.kind !== 'ready';
    // A stopped exchange not stored yet came first: its reply names the chat, not this one.
    const first =
      startsNew ||
      (!historyUnknown && messagesRef.current.length === 0 && nextCursor === null && pendingRef.current === null && stopped.length === 0);
    setSendError(null);
    setDraft('');
    const previous = pendingRef.current;
    if (previous && previous.state !== 'streaming') setStopped((all) => [...all, previous]);
    const sending = newPending(text);
    setPending(sending);
    // Now, not at the next render: a second Enter in this same task finds this send under way.
    pendingRef.current = sending;
    stickToBottom.current = true;
    stoppedRef.current = false;
    const controller = new AbortController();
    abortRef.current = controller;
    // Moves on if the user leaves and comes back before the server takes the message.
    let gen = generation.current;
    // Leaving before the server takes the message (while its new chat is created, too) does not
    // cut it: it goes on unseen, and waits in the chat's message box only if refused.
    let id = startsNew ? null : conversationId;
    const untaken: UntakenSend = { controller, left: false, conversation: id };
    untakenSends.current.add(untaken);

    const fail = (err: unknown, why = whySendFailed(err)) => {
      setPending(null);
      // Nothing the user wrote is lost: the text goes back into the composer.
      setDraft(withUnsent(text));
      if (isConversationGone(err) && id !== null) markGone(id);
      setSendError(why);
      inputRef.current?.focus();
    };

    if (id === null) {
      // Until the chat exists and holds the text, a reload would lose it: the box is empty.
      let chat = takeChatToCreate(writtenIn);
      markCreating(writtenIn, text, chat);
      try {
        let created = await onCreate(chat).catch((err: unknown) => {
          if (isDeletedConversationId(err)) return null;
          throw err;
        });
        // An id kept from a create that got no answer names a chat that is not this send's once
        // it was deleted (ids are used once) or written in since (opened from the list, or in a
        // duplicated tab, which shares the kept id): the send makes a chat of its own.
        if (created === null || created.updated_at !== created.created_at) {
          clearCreating(writtenIn, text);
          chat = newConversationId();
          markCreating(writtenIn, text, chat);
          created = await onCreate(chat);
        }
        id = created.id;
        untaken.conversation = id;
        // Left meanwhile, the user stays where they went; the message goes on into its chat, unseen.
        if (!untaken.left && gen === generation.current) {
          if (gone) {
            // The deleted conversation's messages (or the word that it is gone) are not this one's.
            setGone(false);
            setMessages([]);
            setNextCursor(null);
            setLoad({ kind: 'ready' });
            messagesRef.current = [];
          }
          adoptedRef.current = id;
          onCreated(id);
        }
      } catch (err) {
        if (abortRef.current === controller) abortRef.current = null;
        untakenSends.current.delete(untaken);
        // Cut by a reload: the next page puts the text back by its mark.
        if (pageIsLeaving()) return;
        clearCreating(writtenIn, text);
        // The server may have made the chat and its answer been lost: the next try asks for it again.
        keepChatToCreate(writtenIn, chat);
        if (gen === generation.current) fail(err);
        else keepDraft(writtenIn, text, whySendFailed(err));
        return;
      }
      // The chat holds the text from here, while the page is being left too: it is marked sent
      // there (or kept as a draft) just below, with no wait between. Were the mark left, the next
      // page would offer the text again while this one may still send it.
      clearCreating(writtenIn, text);
    }
    const convId = id;
    if (controller.signal.aborted) {
      untakenSends.current.delete(untaken);
      if (gen !== generation.current) {
        // Stopped, then left (or the view went away), while the new chat was being created: the
        // text waits where it was written, and the next send from there goes into that chat.
        keepDraft(writtenIn, text, STOPPED_BEFORE_SENDING);
        keepChatToCreate(writtenIn, convId);
        return;
      }
      // Stopped while the new chat was being created: nothing was sent.
      if (abortRef.current === controller) abortRef.current = null;
      setPending(null);
      // The view has taken the new chat, whose address may not show yet: the text is its draft,
      // not the next new chat's.
      if (adoptedRef.current === convId) shownId.current = convId;
      setDraft(withUnsent(text));
      setSendError(STOPPED_BEFORE_SENDING);
      return;
    }
    const known = new Set(messagesRef.current.map((m) => m.id));
    /** Once the server answered with a stream the message is taken: a failure must not offer it again. */
    let accepted = false;
    /** Words of the reply were shown: a failure now takes them away, which the alert says. */
    let replyShown = false;
    let lastEventId: string | null = null;
    markSent(convId, text, untaken.left ? null : (messagesRef.current.at(-1)?.id ?? null));
    // Chosen here, so that Stop reaches the reply while the model has not answered yet.
    const running = { controller, conversation: convId, generation: newGenerationId(), stopAsked: false, answered: false };
    runningReply.current = running;
    /** Shown again on coming back: the check for another reply in progress gave way to it. */
    let cameBack = false;
    // The server shows a reply in progress from the moment it takes its message: other tabs
    // showing this chat are told once it has had time to, and show it waiting for the model.
    const announceWaiting = setTimeout(() => {
      if (!accepted && !controller.signal.aborted && !running.stopAsked) onReplying(convId);
    }, ANNOUNCE_WAITING_AFTER_MS);
    untaken.comeBack = () => {
      untaken.left = false;
      cameBack = true;
      abortRef.current = controller;
      runningReply.current = running;
      // A Stop pressed before leaving may not have reached the server: this one asks again.
      running.stopAsked = false;
      gen = generation.current;
      stoppedRef.current = false;
      stickToBottom.current = true;
      const shown = newPending(text);
      setPending(shown);
      pendingRef.current = shown;
    };
    try {
      const exchange: Exchange = await api.streamMessage(convId, text, {
        signal: controller.signal,
        generationId: running.generation,
        onAccepted: () => {
          accepted = true;
          running.answered = true;
          markTaken(convId, text);
          onReplying(convId);
          untakenSends.current.delete(untaken);
          // Taken by the server, the first message names its chat now, not once its reply is
          // stored: a user who leaves or closes the tab meanwhile still finds the chat named.
          if (first) onFirstMessage(convId, text, true);
          // Left meanwhile (and not back): the server goes on with the reply and stores it; stop
          // reading it here.
          if (untaken.left) controller.abort();
        },
        onEventId: (eventId) => {
          lastEventId = eventId;
          noteRunning(controller, convId, eventId);
          if (gen === generation.current) setPending(connectedAgain);
        },
        onReconnect: () => {
          if (gen === generation.current) setPending(reconnecting);
        },
        onDelta: (delta) => {
          if (gen !== generation.current) return;
          replyShown = true;
          setPending((p) => (p ? { ...p, reply: p.reply + delta } : p));
        },
      });
      clearSent(convId, text);
      claimed.current.add(exchange.user_message.id);
      if (gen !== generation.current) return;
      // A first message names the chat once taken (above). Sent after a first message stopped
      // before the server took it: while that is awaited, its wait names the chat after whichever
      // is stored first; once it was lost, this one is the first.
      const ids = new Set([exchange.user_message.id, exchange.assistant_message.id]);
      const firstStored =
        first ||
        (!historyUnknown &&
          loadRef.current.kind === 'ready' &&
          waits.current.size === 0 &&
          nextCursorRef.current === null &&
          messagesRef.current.every((m) => ids.has(m.id)));
      addExchange(exchange);
      setPending(null);
      onActivity(convId, exchange.assistant_message.created_at, firstStored ? text : undefined);
      // The server answered, so the messages before this exchange may load now.
      if (historyUnknown) loadNewest(convId);
    } catch (err) {
      // Cut by a reload (or the tab closing): the server may have the message and store its reply.
      // The next page looks for it by this send's mark, and gives the text back only if it is
      // not there in time.
      if (pageIsLeaving()) return;
      if (gen !== generation.current) {
        // Left before the server took the message, and then it refused it or could not be
        // reached: the text waits in that conversation's message box, unless the conversation
        // is gone (deleted, which ends its replies), box and all. One a proxy gave up on keeps
        // its mark, for that conversation to look for when it is opened again.
        if (isConversationGone(err)) clearSent(convId, text);
        else if (!accepted && !isAbort(err) && !(err instanceof GatewayTimeout)) {
          clearSent(convId, text);
          keepDraft(convId, text, whySendFailed(err));
        }
        return;
      }
      if (isAbort(err)) {
        // Even before its answer, the server may have taken the message: look for it there.
        if (stoppedRef.current) {
          setPending((p) => (p ? { ...p, state: accepted ? 'stopped' : 'stoppedUnanswered' } : p));
          reloadAfterStop(convId, known, lastEventId, accepted ? undefined : 'Stopped before the server answered; it stored nothing.');
        }
      } else if (err instanceof GatewayTimeout && !accepted) {
        // The server may have taken the message and be generating its reply (a slow first word
        // behind a proxy's timeout): look for it before giving the text back, as after Stop.
        setPending((p) => (p ? { ...p, state: 'unanswered' } : p));
        reloadAfterStop(convId, known, null, `${sentence(errorMessage(err))} The server stored nothing.`);
      } else if (accepted && !replyFailed(err)) {
        // The connection broke for good (reconnecting with Last-Event-ID failed) or the reply
        // ended meanwhile: the server still finishes and stores it, so fetch it from there.
        setPending((p) => (p ? { ...p, state: 'interrupted' } : p));
        if (!(err instanceof ApiError && err.code === 'stream_gone')) setSendError(`${LOST_PREFIX} connection to the reply: ${errorMessage(err)}`);
        reloadAfterStop(convId, known, lastEventId);
      } else {
        clearSent(convId, text);
        fail(err, replyShown && !isConversationGone(err) ? whyReplyBrokeOff(err) : undefined);
      }
    } finally {
      clearTimeout(announceWaiting);
      if (abortRef.current === controller) abortRef.current = null;
      untakenSends.current.delete(untaken);
      // Another reply may run here too (another tab's), unseen while this one was shown again.
      if (cameBack && gen === generation.current && abortRef.current === null && waits.current.size === 0) followRef.current(convId, false);
    }
  };

  const stop = () => {
    const reading = abortRef.current;
    inputRef.current?.focus();
    /** Stops reading: the server goes on with the reply, stores it whole, and it is fetched. */
    const stopReading = () => {
      if (abortRef.current !== reading) return;
      stoppedRef.current = true;
      reading?.abort();
    };
    const running = runningReply.current;
    if (reading === null || running?.controller !== reading || running.stopAsked) {
      stopReading();
      return;
    }
    // The server ends the reply where it got to and stores that much; the stream then ends as
    // any reply's does, with the stored exchange, before the next message can be sent.
    running.stopAsked = true;
    const askToStop = (attempt: number) =>
      api.stopReply(running.conversation, running.generation).then(
        (status) => {
          // Unanswered, a send `stopping` waits for its model on another replica, which answers it
          // `stopped` within a quarter of a second.
          if (status === 'stopping' && running.answered) stopReading();
          // Ended (or ending) on the server: its stream (or, before the model answered, the send's
          // `stopped` answer) comes at once, unless the connection died unnoticed, which only
          // stopping reading shows.
          else setTimeout(stopReading, STOPPED_STREAM_PATIENCE_MS);
        },
        (err: unknown) => {
          // Unknown before the send was answered: the stop overtook the message, which the server
          // answers `stopped` when it arrives.
          const overtaken = !running.answered && err instanceof ApiError && err.code === 'generation_not_found';
          if (overtaken) setTimeout(stopReading, STOPPED_STREAM_PATIENCE_MS);
          // Refused for the moment or out of reach: only reading stopped, the server would store
          // the whole reply, so ask again a few times while the reply runs (Stop once more stops
          // reading at once).
          else if ((isBusy(err) || isUnreachable(err)) && attempt < STOP_ATTEMPTS) {
            // Also once the user left, while the send waits for its model there unseen.
            setTimeout(() => {
              if (abortRef.current === reading || untakenWith(reading)) void askToStop(attempt + 1);
            }, stopRetryDelayMs(err));
          } else stopReading();
        },
      );
    void askToStop(1);
  };


  const streaming = pending?.state === 'streaming';
  const empty = load.kind === 'ready' && messages.length === 0 && pending === null && stopped.length === 0;

  return (
    <div className="conversation">
      {/* Not a live region itself: a live log would read out every page of older messages put in
          above, and the whole newest page on opening a chat. Replies are announced below. */}
      <div
        className="log"
        role="log"
        aria-live="off"
        aria-label="Messages"
        aria-busy={load.kind === 'loading' || streaming}
        ref={logRef}
        onScroll={onScroll}
        tabIndex={0}
      >
        {load.kind === 'loading' && (
          <p className="state" role="status">
            Loading messages…
          </p>
        )}
        {load.kind === 'error' && (
          <div className="state error" role="alert">
            {doesNotExist(load.error) ? (
              <p>This conversation does not exist (any more). Pick another one or start a new chat.</p>
            ) : (
              <>
                <p>{isUnreachable(load.error) ? 'Cannot reach the server.' : `Could not load the messages: ${errorMessage(load.error)}`}</p>
                {(isUnreachable(load.error) || isBusy(load.error)) && <p className="state-hint">Trying again by itself.</p>}
                <button type="button" className="button" onClick={loadAgain}>
                  Retry
                </button>
              </>
            )}
          </div>
        )}
        {empty && (
          <div className="state empty">
            <p className="empty-title">{conversationId ? 'No messages yet' : 'Start a new conversation'}</p>
            <p>Type a message below and press Enter to send it.</p>
          </div>
        )}
        {load.kind === 'ready' && nextCursor && (
          <div className="older">
            {olderError ? (
              <>
                <span role="alert">Could not load older messages: {olderError}</span>{' '}
                <button type="button" className="button small" onClick={loadOlder}>
                  Retry
                </button>
              </>
            ) : (
              // Not disabled while loading: a disabled button drops the keyboard focus.
              <button type="button" className="button small" onClick={loadOlder} aria-disabled={olderLoading}>
                {olderLoading ? 'Loading older messages…' : 'Load older messages'}
              </button>
            )}
          </div>
        )}
        {messages.map((m) => (
          <MessageItem key={m.id} role={m.role} content={m.content} />
        ))}
        {stopped.map((p) => (
          <Fragment key={p.key}>
            <MessageItem role="user" content={p.user} state="sending" />
            <MessageItem role="assistant" content={p.reply} state={p.state} />
          </Fragment>
        ))}
        {followRefused && (
          <p className="state" role="status">
            Live updates are paused: this browser, or its network, already follows as many replies as the server allows. Trying again by itself.
          </p>
        )}
        {pending && (
          <>
            <MessageItem role="user" content={pending.user} state="sending" />
            <MessageItem role="assistant" content={pending.reply} state={pending.state} reconnecting={pending.reconnecting === true} />
          </>
        )}
      </div>
      {/* Outside the log: not hidden with it while it is busy, and not scrolled by the arrow keys,
          which would take it away from under its own focus. */}
      {awayFromLatest && (
        <div className="jump-to-latest" onWheel={scrollLogBy}>
          <button type="button" className="button small" onClick={jumpToLatest}>
            <span aria-hidden="true">↓</span> Jump to latest
          </button>
        </div>
      )}
      <div className="visually-hidden" role="status" data-testid="reply-announcer">
        {announced && (
          <div key={announced.id}>
            Assistant: <Markdown text={announced.content} focusable={false} />
          </div>
        )}
      </div>
      {sendError && (
        <div className="send-error" role="alert">
          {sendError}
        </div>
      )}
      <Composer
        value={draft}
        onChange={setDraft}
        onSend={() => void send()}
        onStop={stop}
        streaming={streaming}
        inputRef={inputRef}
        maxChars={maxMessageChars}
      />
    </div>
  );
}

/** How long a reply the server has stopped may take to end its stream before it is read no more. */
const STOPPED_STREAM_PATIENCE_MS = 3000;
/**
 * A stop the server refused for the moment (or that did not reach it) is asked this many times in
 * all, this far apart, or as `Retry-After` asks, up to a limit: the reply runs meanwhile.
 */
const STOP_ATTEMPTS = 4;
const STOP_RETRY_MS = 500;
const STOP_RETRY_MAX_MS = 2000;

function stopRetryDelayMs(err: unknown): number {
  if (!(err instanceof ApiError) || err.retryAfter === undefined) return STOP_RETRY_MS;
  return Math.min(Math.max(err.retryAfter * 1000, STOP_RETRY_MS), STOP_RETRY_MAX_MS);
}

/** A wheel's line, for wheels that count in lines (Firefox's), as browsers scroll one. */
const WHEEL_LINE_PX = 40;

/** How far above the newest messages the view must be before a button offers the way back. */
const JUMP_BUTTON_AFTER_PX = 200;

/** How far the bottom of the view is above the bottom of the messages. */
function distanceFromLatest(el: HTMLElement): number {
  return el.scrollHeight - el.scrollTop - el.clientHeight;
}

function isAwayFromLatest(el: HTMLElement): boolean {
  return distanceFromLatest(el) > JUMP_BUTTON_AFTER_PX;
}

/** The reply to the latest user message of `page` that says `text`, if it is in the page. */
function replyTo(page: Message[], text: string): Message | undefined {
  for (let i = page.length - 1; i > 0; i -= 1) {
    if (page[i].role === 'assistant' && page[i - 1].role === 'user' && page[i - 1].content === text) return page[i];
  }
  return undefined;
}

/**
 * `shown` brought up to date with the conversation's newest page, in the server's order: the page
 * takes the place of what it holds at the end, and older messages stay before it.
 */
function withNewest(shown: Message[], newest: Message[]): Message[] {
  const inPage = new Set(newest.map((m) => m.id));
  return [...shown.filter((m) => !inPage.has(m.id)), ...newest];
}

/** A message from the server as a sentence: it may come without a full stop. */
/** A streaming reply whose connection dropped is being reached again. */
function reconnecting(p: Pending | null): Pending | null {
  return p && p.state === 'streaming' && !p.reconnecting ? { ...p, reconnecting: true } : p;
}

/** An event came: the reply is reached again (unchanged when it was not being reached again). */
function connectedAgain(p: Pending | null): Pending | null {
  return p?.reconnecting ? { ...p, reconnecting: false } : p;
}

/** A Stop while the new chat of a first send was being created: nothing was sent. */
const STOPPED_BEFORE_SENDING = 'Stopped before sending; your message is back in the message box.';

/** What the user is told of a send that failed, its text back in the message box. */
function whySendFailed(err: unknown): string {
  if (isUnreachable(err)) return 'Cannot reach the server. Your message was not sent; it is back in the message box.';
  if (isStoppedEarly(err)) return `${whyNothingStored(err)} Your message is back in the message box.`;
  if (isConversationGone(err)) {
    return 'This conversation was deleted, perhaps in another tab. Your message is back in the message box: send it again to start a new chat with it.';
  }
  return `Sending failed: ${sentence(errorMessage(err))}${retryHint(err)} Your message is back in the message box.`;
}

/** Why the words of a reply being read went away: the message was sent, its reply failed. */
function whyReplyBrokeOff(err: unknown): string {
  return `The reply broke off, and nothing of it was stored: ${sentence(errorMessage(err))}${retryHint(err)} Your message is back in the message box.`;
}

/** The reply ended with `error` `stopped`: a Stop came before its first words. */
function isStoppedEarly(err: unknown): boolean {
  return err instanceof ApiError && err.code === 'stopped';
}

/** Why a reply that ended with an `error` event left nothing stored. */
function whyNothingStored(err: unknown): string {
  return isStoppedEarly(err)
    ? 'Stopped before the reply began. Nothing was stored.'
    : `The assistant failed to reply: ${sentence(errorMessage(err))} Nothing was stored.`;
}

function sentence(text: string): string {
  return /[.!?…]$/.test(text) ? text : `${text}.`;
}

/** No conversation has this id: gone, or not an id at all (a mangled link). */
function doesNotExist(err: unknown): boolean {
  return isConversationGone(err) || (err instanceof ApiError && err.code === 'invalid_id');
}

/** How long to wait before asking again after `err`: the server's `Retry-After`, or a few seconds. */
function retryDelayMs(err: unknown): number {
  return err instanceof ApiError && err.retryAfter !== undefined ? Math.max(err.retryAfter, 1) * 1000 : UNREACHABLE_RETRY_MS;
}

function retryHint(err: unknown): string {
  if (!(err instanceof ApiError) || err.retryAfter === undefined) return '';
  // The server's own sentence may already say so ("The server is busy; try again shortly."):
  // saying it twice reads as a stutter.
  return /try again/i.test(err.message) ? '' : ` Try again in ${err.retryAfter} s.`;
}
