import { type KeyboardEvent, type MouseEvent, useCallback, useEffect, useLayoutEffect, useRef, useState } from 'react';
import { ApiError, api, errorMessage, isConversationGone, isUnreachable } from './api/client';
import { joinTabs, type TabSync } from './api/sync';
import type { Conversation, Page } from './api/types';
import type { ChosenBy } from './components/ConversationItem';
import { ConversationView } from './components/ConversationView';
import { Sidebar } from './components/Sidebar';
import { ThemeToggle } from './components/ThemeToggle';
import { NEW_CHAT_HASH, conversationHash, idFromHash } from './address';
import { forgetChatCreatedHereUnlessShown, forgetConversation, loadDraft, noteChatCreatedHere } from './drafts';
import { useRetryWhileOut } from './hooks/useRetryWhileOut';
import { useTheme } from './hooks/useTheme';
import { MAX_TITLE_CODE_POINTS, characters, codePoints, cutToCodePoints } from './text';

const LIST_PAGE = 50;
/** Back to a tab hidden at least this long, the list and the open conversation catch up. */
const CATCH_UP_AFTER_HIDDEN_MS = 5_000;
/** A catch-up's list read still out after this long does not hold the next one back. */
const CATCH_UP_PATIENCE_MS = 15_000;
/** Catch-ups this close together are one burst (a flapping network): one read of the open conversation. */
const CATCH_UP_BURST_MS = 1_000;
const DEFAULT_TITLE = 'New chat';
/**
 * The seed routes' conversation (docs/api.md), which the server creates as "Chat": most users'
 * first, named after a first message sent into it here, as a new chat is.
 */
const DEFAULT_CONVERSATION = { id: '00000000-0000-7000-8000-000000000000', title: 'Chat' };
/** The screens on which the conversations sit behind a menu (as in styles.css). */
const PHONE_SCREEN = '(max-width: 767px)';
/** RFC 3339 strings may differ in fractional digits or offset, so compare instants, not text. */
const instant = (t: string) => Date.parse(t) || 0;

function byRecent(a: Conversation, b: Conversation): number {
  return instant(b.updated_at) - instant(a.updated_at);
}

type ListState = { kind: 'loading' } | { kind: 'ready' } | { kind: 'error'; error: unknown };

export function App() {
  const { theme, toggle } = useTheme();
  const [conversations, setConversations] = useState<Conversation[]>([]);
  const [listCursor, setListCursor] = useState<string | null>(null);
  const [list, setList] = useState<ListState>({ kind: 'loading' });
  const [sidebarError, setSidebarError] = useState<string | null>(null);
  const [selectedId, setSelectedId] = useState<string | null>(idFromHash);
  const [menuOpen, setMenuOpen] = useState(false);
  const menuOpenRef = useRef(menuOpen);
  menuOpenRef.current = menuOpen;
  const menuButtonRef = useRef<HTMLButtonElement>(null);
  /** Conversations this tab learned of on its own (created here, or told by another tab). */
  const learnedOf = useRef(new Set<string>());
  /** Conversations deleted here or in another tab: a late event must not bring one back. */
  const [deleted, setDeleted] = useState<ReadonlySet<string>>(new Set());
  const deletedRef = useRef(deleted);
  deletedRef.current = deleted;
  const conversationsRef = useRef(conversations);
  conversationsRef.current = conversations;
  /** Conversations being created by a first send from a new chat, right now. */
  const creating = useRef(0);
  /**
   * The user asked for a new chat: the list arriving later must not open the newest conversation
   * instead, nor a list that failed to load hide the message box.
   */
  const [choseNewChat, setChoseNewChat] = useState(() => window.location.hash === NEW_CHAT_HASH);
  const choseNewChatRef = useRef(choseNewChat);
  choseNewChatRef.current = choseNewChat;
  /** Counts New chat clicks: one made in the empty chat itself starts it over too. */
  const [newChatClicks, setNewChatClicks] = useState(0);
  /** The server's limit on a message, once known: the message box holds back what it would refuse. */
  const [maxMessageChars, setMaxMessageChars] = useState<number | null>(null);

  useEffect(() => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    let gone = false;
    const ask = (attempt: number) => {
      api.limits().then(
        (limits) => {
          if (!gone) setMaxMessageChars(limits.max_message_chars);
        },
        () => {
          // Out of reach for now: until known, the server's own refusal is what the user sees. The
          // last wait repeats: a limit learned late still spares a refused message.
          const delay = LIMITS_RETRY_DELAYS_MS[Math.min(attempt, LIMITS_RETRY_DELAYS_MS.length - 1)];
          if (!gone) timer = setTimeout(() => ask(attempt + 1), delay);
        },
      );
    };
    ask(0);
    return () => {
      gone = true;
      clearTimeout(timer);
    };
  }, []);

  const loadList = useCallback(() => {
    setList({ kind: 'loading' });
    api.listConversations({ limit: LIST_PAGE }).then(
      (page) => {
        // Keep conversations learned of while the list was loading: the page may predate them.
        setConversations((prev) => {
          const inPage = new Set(page.items.map((c) => c.id));
          const mine = prev.filter((c) => learnedOf.current.has(c.id) && !inPage.has(c.id));
          return [...mine, ...page.items].sort(byRecent);
        });
        setListCursor(page.next_cursor);
        setList({ kind: 'ready' });
        // The newest conversation opens, unless the user began a new chat while the list loaded:
        // switching would hide what they typed, or cut the send that is creating the chat.
        const composing = choseNewChatRef.current || creating.current > 0 || loadDraft(null).trim() !== '';
        setSelectedId((current) => current ?? (composing ? null : (page.items[0]?.id ?? null)));
      },
      (error: unknown) => setList({ kind: 'error', error }),
    );
  }, []);
  useRetryWhileOut(list.kind === 'error' ? list.error : null, list.kind === 'ready', loadList);

  useEffect(loadList, [loadList]);

  // The selected conversation lives in the URL so a reload comes back to it. Opening one is a new
  // history entry, so Back returns to the conversation before; a selection the app makes on its
  // own (the first one shown, the next one after a delete) replaces the entry instead. A layout
  // effect: a passive one pending from the app's own choice would take the user's for it.
  const openedByUser = useRef(false);
  useLayoutEffect(() => {
    const hash = selectedId ? conversationHash(selectedId) : choseNewChat ? NEW_CHAT_HASH : '';
    const url = `${window.location.pathname}${window.location.search}${hash}`;
    if (window.location.hash !== hash) {
      if (openedByUser.current && window.location.hash !== '') history.pushState(null, '', url);
      else history.replaceState(null, '', url);
    }
    openedByUser.current = false;
    // Kept while its chat is shown: a reload begun before the address named it goes to the
    // address it began with, and the next page needs the note (the page may live on for seconds).
    forgetChatCreatedHereUnlessShown(selectedId);
  }, [selectedId, choseNewChat]);

  useEffect(() => {
    const onHash = () => {
      setSelectedId(idFromHash());
      setChoseNewChat(window.location.hash === NEW_CHAT_HASH);
      // Back on a phone with the menu open shows the chat it goes back to, not the menu over it.
      if (menuOpenRef.current) closeMenu();
    };
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);

  const loadMore = () => {
    if (!listCursor) return;
    setList({ kind: 'loading' });
    // A conversation active on another device since the list loaded has moved above the cursor,
    // out of reach of the next page: the top of the list is read again with it.
    const known = knownConversations();
    const top = api.listConversations({ limit: LIST_PAGE }).catch(() => null);
    api.listConversations({ limit: LIST_PAGE, cursor: listCursor }).then(
      async (page) => {
        const first = await top;
        if (first) takeFirstPage(first, known);
        setConversations((cs) => {
          const have = new Set(cs.map((c) => c.id));
          // Sorted again: a conversation opened by its link may already be in, out of page order.
          return [...cs, ...page.items.filter((c) => !have.has(c.id))].sort(byRecent);
        });
        setListCursor(page.next_cursor);
        setList({ kind: 'ready' });
      },
      (error: unknown) => {
        setList({ kind: 'ready' });
        setSidebarError(`Could not load more conversations: ${errorMessage(error)}`);
      },
    );
  };

  /**
   * A conversation as last seen (created here, told of by another tab, fetched): added if new
   * here, else renamed, its activity time never moved back.
   */
  const learn = (c: Conversation) => {
    if (deletedRef.current.has(c.id)) return;
    learnedOf.current.add(c.id);
    const withLearned = (cs: Conversation[]) => {
      const known = cs.find((x) => x.id === c.id);
      if (!known) return [c, ...cs].sort(byRecent);
      const updated_at = instant(c.updated_at) > instant(known.updated_at) ? c.updated_at : known.updated_at;
      return cs.map((x) => (x.id === c.id ? { ...x, title: c.title, updated_at } : x)).sort(byRecent);
    };
    setConversations(withLearned);
    // Already so for code that runs before the next render: a reply that comes back at once must
    // find its new chat still untitled, or the chat keeps "New chat".
    conversationsRef.current = withLearned(conversationsRef.current);
  };

  /** Another tab deleted the conversation. Unsent text goes with it, unless it is open here: a send from it starts a new chat. */
  const forget = (id: string) => {
    setDeleted((ids) => new Set(ids).add(id));
    setConversations((cs) => cs.filter((c) => c.id !== id));
    if (id !== selectedRef.current) forgetConversation(id);
  };

  /**
   * Before a conversation leaves the list for being deleted `where`: a user at its entry (renaming
   * it, say) sees its buttons and field go, so say why, and keep the keyboard focus in the list.
   */
  const sayWhyItGoes = (id: string, where: string) => {
    const focusedItem = document.activeElement?.closest<HTMLElement>('#sidebar .conversation-item');
    if (focusedItem?.dataset.id !== id) return;
    setSidebarError(`That conversation was deleted ${where}.`);
    setTimeout(focusNewChat);
  };

  /** Deleted in another tab or on another device: as `forget`, and a user at it is told why it went. */
  const deletedElsewhere = (id: string, where: string) => {
    sayWhyItGoes(id, where);
    forget(id);
  };

  /** The conversations listed now, with their activity times, as a read of the list starts. */
  const knownConversations = (): ReadonlyMap<string, string> => new Map(conversationsRef.current.map((c) => [c.id, c.updated_at]));

  /**
   * The list's first page read afresh while `known` were listed here: new and renamed chats come
   * in, and one listed here that the page should hold but does not was deleted on another device.
   * One active here since the read began (renamed, sent to) may have moved up after the page was
   * read: it is not judged by this page.
   */
  const takeFirstPage = (page: Page<Conversation>, known: ReadonlyMap<string, string>) => {
    const activeHereSince = (c: Conversation) => known.has(c.id) && conversationsRef.current.find((x) => x.id === c.id)?.updated_at !== known.get(c.id);
    // The page's view of one active here since is older than the list's (its title before a rename).
    for (const c of page.items) if (!activeHereSince(c)) learn(c);
    const inPage = new Set(page.items.map((c) => c.id));
    const last = page.items.at(-1);
    // Activity only moves a chat up: one more recent than the page's last would be in the page.
    const belongsInPage = (c: Conversation) => page.next_cursor === null || (last !== undefined && instant(c.updated_at) > instant(last.updated_at));
    for (const c of conversationsRef.current) {
      if (known.get(c.id) !== c.updated_at || inPage.has(c.id) || !belongsInPage(c)) continue;
      deletedElsewhere(c.id, 'on another device');
      tabs.current?.post({ kind: 'deleted', id: c.id, onAnotherDevice: true });
    }
  };

  /**
   * Conversations found not to exist: listed here before (deleted on another device), or never
   * (a link to one deleted long ago, or no id at all).
   */
  const [missing, setMissing] = useState<ReadonlyMap<string, 'deleted' | 'unknown'>>(new Map());
  /** The conversation was deleted elsewhere (another tab, or found gone): drop it from the list. */
  const onGone = useCallback((id: string) => {
    const listed = conversationsRef.current.some((c) => c.id === id);
    if (listed) {
      // Found gone by opening, sending or catching up, whichever came first: the same as when the
      // list finds it gone, here and in the other tabs.
      sayWhyItGoes(id, 'on another device');
      tabs.current?.post({ kind: 'deleted', id, onAnotherDevice: true });
    }
    setMissing((ids) => new Map(ids).set(id, listed ? 'deleted' : 'unknown'));
    setConversations((cs) => cs.filter((c) => c.id !== id));
  }, []);

  const touch = (id: string, updatedAt: string) =>
    setConversations((cs) =>
      cs.map((c) => (c.id === id && instant(updatedAt) > instant(c.updated_at) ? { ...c, updated_at: updatedAt } : c)).sort(byRecent),
    );

  // Other tabs of this browser say what they changed, so this one shows it without a reload.
  const tabs = useRef<TabSync | null>(null);
  const [storedElsewhere, setStoredElsewhere] = useState(0);
  const [replyingElsewhere, setReplyingElsewhere] = useState(0);
  const selectedRef = useRef(selectedId);
  selectedRef.current = selectedId;
  useEffect(() => {
    const sync = joinTabs((event) => {
      if (event.kind === 'upserted') learn(event.conversation);
      else if (event.kind === 'deleted') deletedElsewhere(event.id, event.onAnotherDevice ? 'on another device' : 'in another tab');
      else if (event.kind === 'replying') {
        if (event.id === selectedRef.current) setReplyingElsewhere((n) => n + 1);
      } else {
        if (conversationsRef.current.some((c) => c.id === event.id)) touch(event.id, event.updatedAt);
        // Beyond the loaded page of the list: fetch it, as it is now among the most recent.
        else api.getConversation(event.id).then(learn, () => undefined);
        if (event.id === selectedRef.current) setStoredElsewhere((n) => n + 1);
      }
    });
    tabs.current = sync;
    return () => {
      // A send's timer may still post once this is gone.
      tabs.current = null;
      sync.close();
    };
  }, []);

  // Back to this tab after a while, or back online: the list and the open conversation catch up
  // with what other devices did meanwhile, as a reload would show them.
  const listRef = useRef(list);
  listRef.current = list;
  useEffect(() => {
    let hiddenSince = document.hidden ? Date.now() : null;
    // One list read at a time: a burst of `online` events (a flapping network) reads it once. A
    // read that hangs (a network not really back) is not waited for longer than a while. The open
    // conversation is read again whatever the list read, once per burst: a return while a slow
    // list read is still out would otherwise miss what came meanwhile.
    let listReadSince: number | null = null;
    let conversationReadAt = Number.NEGATIVE_INFINITY;
    const catchUp = () => {
      if (listRef.current.kind === 'error') {
        listRef.current = { kind: 'loading' };
        return loadList();
      }
      if (listRef.current.kind === 'loading') return;
      const now = Date.now();
      if (listReadSince === null || now - listReadSince >= CATCH_UP_PATIENCE_MS) {
        listReadSince = now;
        const known = knownConversations();
        api
          .listConversations({ limit: LIST_PAGE })
          .then(
            (page) => takeFirstPage(page, known),
            () => undefined,
          )
          .finally(() => {
            if (listReadSince === now) listReadSince = null;
          });
      }
      if (selectedRef.current !== null && now - conversationReadAt >= CATCH_UP_BURST_MS) {
        conversationReadAt = now;
        setStoredElsewhere((n) => n + 1);
      }
    };
    const onVisibility = () => {
      if (document.hidden) hiddenSince ??= Date.now();
      else {
        if (hiddenSince !== null && Date.now() - hiddenSince >= CATCH_UP_AFTER_HIDDEN_MS) catchUp();
        hiddenSince = null;
      }
    };
    document.addEventListener('visibilitychange', onVisibility);
    window.addEventListener('online', catchUp);
    return () => {
      document.removeEventListener('visibilitychange', onVisibility);
      window.removeEventListener('online', catchUp);
    };
  }, [loadList]);

  const select = (id: string, chosenBy: ChosenBy) => {
    // Choosing the conversation already open (to close the phone menu) adds no history entry.
    if (id !== selectedId) openedByUser.current = true;
    setSelectedId(id);
    setChoseNewChat(false);
    // Tapped, the chat is shown without an on-screen keyboard opening over it: from the phone menu
    // the focus goes back to the menu button, as when the menu is closed.
    if (menuOpen && chosenBy === 'touch') closeMenu();
    else if (menuOpen) {
      setMenuOpen(false);
      setTimeout(focusComposer);
    } else if (chosenBy === 'mouse') {
      // What is typed next goes to the chat clicked, not to the list, where Enter would only choose
      // it again. Chosen with the keyboard, the focus stays in the list, to go on through it.
      focusComposer();
    }
  };

  const createConversation = useCallback(async (id: string) => {
    creating.current += 1;
    const c = await api.createConversation({ id }).finally(() => {
      creating.current -= 1;
    });
    learn(c);
    tabs.current?.post({ kind: 'upserted', conversation: c });
    setSidebarError(null);
    return c;
  }, []);

  /**
   * Opens an empty chat. The conversation is created by its first send, as a user expects: a
   * New chat left without a word leaves nothing behind in the list, on any device.
   */
  const newChat = () => {
    if (selectedId !== null) openedByUser.current = true;
    setChoseNewChat(true);
    setNewChatClicks((n) => n + 1);
    setSelectedId(null);
    setMenuOpen(false);
    setTimeout(focusComposer);
  };

  /** The conversation a first send created takes the new chat's place, in the history too. */
  const adoptCreated = useCallback((id: string) => {
    noteChatCreatedHere(id);
    setSelectedId(id);
    setChoseNewChat(false);
  }, []);

  const rename = async (id: string, title: string) => {
    try {
      const c = await api.renameConversation(id, title);
      // The server counts a rename as activity: the list takes the order it will have on reload.
      setConversations((cs) => cs.map((x) => (x.id === id ? c : x)).sort(byRecent));
      tabs.current?.post({ kind: 'upserted', conversation: c });
      setSidebarError(null);
    } catch (err) {
      if (isConversationGone(err)) {
        // Deleted on another device: the list stops offering it, as opening it would show.
        forget(id);
        tabs.current?.post({ kind: 'deleted', id });
        setSidebarError('Could not rename: that conversation was deleted, perhaps on another device.');
        // Its buttons go away with it: keep keyboard focus in the list.
        setTimeout(focusNewChat);
        return;
      }
      setSidebarError(`Could not rename: ${errorMessage(err)}`);
      throw err;
    }
  };

  /** Deletes a conversation; resolves whether it is gone. */
  const remove = async (id: string) => {
    try {
      await api.deleteConversation(id).catch((err: unknown) => {
        // Deleted already (on another device): what the user asked for is done.
        if (!isConversationGone(err)) throw err;
      });
      forgetConversation(id);
      tabs.current?.post({ kind: 'deleted', id });
      setDeleted((ids) => new Set(ids).add(id));
      setSidebarError(null);
      setConversations((cs) => {
        const rest = cs.filter((x) => x.id !== id);
        setSelectedId((cur) => (cur === id ? (rest[0]?.id ?? null) : cur));
        return rest;
      });
      return true;
    } catch (err) {
      setSidebarError(`Could not delete: ${errorMessage(err)}`);
      return false;
    }
  };

  /**
   * Conversations named, or being named, from their first message: it may be seen again before the
   * new name has reached the list (opened, then its reply picked up).
   */
  const naming = useRef(new Set<string>());

  /** The first messages this tab named conversations after, by conversation. */
  const namedAfter = useRef(new Map<string, string>());

  /** First messages of conversations not in the list yet, by conversation, and whether seen taken. */
  const firstMessagesBeforeList = useRef(new Map<string, { text: string; seenTaken: boolean }>());

  /** A fresh "New chat" takes its name from its first message. */
  const onFirstMessage = useCallback((id: string, firstUserText: string, seenTaken = false) => {
    const title = () => conversationsRef.current.find((c) => c.id === id)?.title;
    const givenFrom = namedAfter.current.get(id);
    // Named here after a first message that was never stored (lost in a restart, or its reply
    // failed) when another is the first it holds: the old name shows words the chat does not.
    const misnamed = () => givenFrom !== undefined && givenFrom !== firstUserText && title() === titleFrom(givenFrom);
    // The default conversation is "Chat" by the server's choice only while it is empty: once it
    // holds messages, the name may be its user's.
    const unnamedDefault = () => seenTaken && id === DEFAULT_CONVERSATION.id && title() === DEFAULT_CONVERSATION.title;
    const untitled = () => title() === DEFAULT_TITLE || unnamedDefault() || misnamed();
    if (title() === undefined) {
      // Its messages loaded before the list that names it (opened by a reload, say): named once it has.
      const earlier = firstMessagesBeforeList.current.get(id);
      const seen = seenTaken || (earlier?.text === firstUserText && earlier.seenTaken);
      firstMessagesBeforeList.current.set(id, { text: firstUserText, seenTaken: seen });
      return;
    }
    // Named (or being named) already, unless after another text than this one.
    if (!untitled() || (naming.current.has(id) && !misnamed())) return;
    naming.current.add(id);
    namedAfter.current.set(id, firstUserText);
    const named = (c: Conversation) => {
      setConversations((cs) => cs.map((x) => (x.id === id ? { ...x, title: c.title } : x)));
      tabs.current?.post({ kind: 'upserted', conversation: c });
    };
    nameConversation(id, titleFrom(firstUserText), untitled, named, () => naming.current.delete(id));
  }, []);

  useEffect(() => {
    for (const [id, { text, seenTaken }] of firstMessagesBeforeList.current) {
      if (!conversations.some((c) => c.id === id)) continue;
      firstMessagesBeforeList.current.delete(id);
      onFirstMessage(id, text, seenTaken);
    }
  }, [conversations, onFirstMessage]);

  /** A reply to a message sent here began: the other tabs showing its conversation follow it. */
  const onReplying = useCallback((id: string) => tabs.current?.post({ kind: 'replying', id }), []);

  const onActivity = useCallback(
    (id: string, updatedAt: string, firstUserText?: string) => {
      // Something was stored, so the server is reachable again: an old sidebar error is stale.
      setSidebarError(null);
      touch(id, updatedAt);
      tabs.current?.post({ kind: 'stored', id, updatedAt });
      // A first exchange just stored, sent or followed here: its message was seen taken.
      if (firstUserText !== undefined) onFirstMessage(id, firstUserText, true);
    },
    [onFirstMessage],
  );

  /** Set when the menu closes from the keyboard or the scrim: focus then goes back to its button. */
  const refocusMenuButton = useRef(false);
  const closeMenu = () => {
    refocusMenuButton.current = true;
    setMenuOpen(false);
  };

  const selected = conversations.find((c) => c.id === selectedId);
  const unreachable = list.kind === 'error' && conversations.length === 0 && !choseNewChat;
  // The empty chat is not called "Chat": a fresh database's first conversation has that name.
  const firstLoad = list.kind === 'loading' && conversations.length === 0;
  const emptyChat = selectedId === null && !firstLoad && !unreachable;
  // Nor is a conversation that is gone: "Chat" stays only while a title is not known yet.
  const gone = selectedId === null ? undefined : deleted.has(selectedId) ? 'deleted' : missing.get(selectedId);
  const goneTitle = gone === 'deleted' ? 'Deleted conversation' : gone === 'unknown' ? 'Conversation not found' : null;
  const heading = selected?.title ?? (emptyChat ? DEFAULT_TITLE : goneTitle);

  // A conversation opened by its link may be older than the loaded page of the list: fetch it, so
  // its title shows and new activity moves it to the top like any other.
  const listReady = list.kind === 'ready';
  useEffect(() => {
    if (!listReady || selectedId === null || conversationsRef.current.some((c) => c.id === selectedId)) return;
    let current = true;
    api.getConversation(selectedId).then(
      (c) => {
        if (current) learn(c);
      },
      () => undefined,
    );
    return () => {
      current = false;
    };
  }, [listReady, selectedId]);

  useEffect(() => {
    document.title = heading ? `${heading} – Chat` : 'Chat';
  }, [heading]);

  // The menu exists only on a phone-sized screen: a menu left open when the screen widens (a
  // phone turned sideways) would leave the page behind it inert with no menu button to close it.
  useEffect(() => {
    if (typeof matchMedia !== 'function') return;
    const phone = matchMedia(PHONE_SCREEN);
    const onChange = () => {
      if (!phone.matches) setMenuOpen(false);
    };
    phone.addEventListener('change', onChange);
    return () => phone.removeEventListener('change', onChange);
  }, []);

  // On a wide screen the keys typed first go to the message box, as the empty chat invites; not on
  // a phone, where focusing it would open the keyboard over the page.
  useEffect(() => {
    if (typeof matchMedia !== 'function' || matchMedia(PHONE_SCREEN).matches) return;
    if (document.activeElement === document.body) focusComposer();
  }, []);

  // On a phone the sidebar opens over the page: move focus into it. Back to the menu button once
  // it has closed: before, the header behind the menu is still inert and cannot take focus.
  useEffect(() => {
    if (menuOpen) focusNewChat();
    else if (refocusMenuButton.current) {
      refocusMenuButton.current = false;
      menuButtonRef.current?.focus();
    }
  }, [menuOpen]);

  return (
    <div
      className={`app${menuOpen ? ' menu-open' : ''}`}
      onKeyDown={(e) => {
        if (!menuOpen) return;
        if (e.key === 'Escape') closeMenu();
        else if (e.key === 'Tab') keepFocusInMenu(e);
      }}
    >
      <a className="skip-link" href="#composer-input" onClick={skipToComposer} inert={menuOpen}>
        Skip to message box
      </a>
      {/* While the phone menu is open over the page, what is behind it (this header, the main
          column, the skip link) is inert, so keyboard focus stays in the menu; Escape or the
          scrim closes it. */}
      <header className="topbar" inert={menuOpen}>
        <button
          type="button"
          className="icon-button menu-button"
          ref={menuButtonRef}
          aria-expanded={menuOpen}
          aria-controls="sidebar"
          aria-label="Conversations menu"
          onClick={() => setMenuOpen((o) => !o)}
        >
          <svg viewBox="0 0 24 24" aria-hidden="true" focusable="false">
            <path d="M4 6h16M4 12h16M4 18h16" fill="none" stroke="currentColor" strokeWidth="2" strokeLinecap="round" />
          </svg>
        </button>
        <h1 className="topbar-title" dir="auto" title={heading ?? undefined}>
          {heading ?? 'Chat'}
        </h1>
        <ThemeToggle theme={theme} onToggle={toggle} />
      </header>
      <Sidebar
        id="sidebar"
        open={menuOpen}
        conversations={conversations}
        selectedId={selectedId}
        loading={list.kind === 'loading'}
        listFailed={list.kind === 'error'}
        onRetryList={loadList}
        hasMore={listCursor !== null}
        error={sidebarError}
        onSelect={select}
        onNew={newChat}
        onRename={rename}
        onDelete={remove}
        onLoadMore={loadMore}
      />
      {menuOpen && <div className="scrim" onClick={closeMenu} aria-hidden="true" />}
      <main className="main" inert={menuOpen}>
        {unreachable ? (
          <div className="state error page-error" role="alert">
            <p className="empty-title">
              {isUnreachable(list.error) ? 'Cannot reach the server.' : `Could not load conversations: ${errorMessage(list.error)}`}
            </p>
            <p>Check that chat-server is running. This page tries again by itself, and loads once it answers.</p>
            <button type="button" className="button primary" onClick={loadList}>
              Retry
            </button>
          </div>
        ) : (
          <ConversationView
            conversationId={selectedId}
            newChatClicks={newChatClicks}
            onCreate={createConversation}
            onCreated={adoptCreated}
            onActivity={onActivity}
            onFirstMessage={onFirstMessage}
            onGone={onGone}
            storedElsewhere={storedElsewhere}
            replyingElsewhere={replyingElsewhere}
            onReplying={onReplying}
            deletedElsewhere={selectedId !== null && deleted.has(selectedId)}
            maxMessageChars={maxMessageChars}
          />
        )}
      </main>
    </div>
  );
}

/** Waits before each new try at learning the server's limits, while it cannot be reached; the last repeats. */
const LIMITS_RETRY_DELAYS_MS = [2000, 5000, 15000, 60000];

/** Waits before each new try at naming a conversation, while the server cannot be reached. */
const NAMING_RETRY_DELAYS_MS = [1000, 4000, 15000];

/**
 * Renames a conversation after its first message, once the server has taken it. A rename the
 * server could not take (it was restarting, say) is tried again a little later, as long as the
 * conversation is still untitled; one it refused (deleted meanwhile) is left alone, as a name is
 * a nicety.
 */
function nameConversation(
  id: string,
  title: string,
  untitled: () => boolean,
  named: (c: Conversation) => void,
  gaveUp: () => void,
  attempt = 0,
) {
  api.renameConversation(id, title).then(named, (err: unknown) => {
    const delay = NAMING_RETRY_DELAYS_MS[attempt];
    const transient = isUnreachable(err) || (err instanceof ApiError && err.status >= 500);
    if (delay === undefined || !transient) {
      gaveUp();
      return;
    }
    setTimeout(() => {
      if (untitled()) nameConversation(id, title, untitled, named, gaveUp, attempt + 1);
      else gaveUp();
    }, delay);
  });
}

/**
 * Tab and Shift+Tab go round the open phone menu, as in a dialog: the page behind it is inert, so
 * focus would otherwise leave it for the page's body or the browser's own controls.
 */
function keepFocusInMenu(event: KeyboardEvent) {
  // A dialog opened from the menu keeps focus among its own buttons.
  if (event.defaultPrevented) return;
  const controls = [...document.querySelectorAll<HTMLElement>('#sidebar button:not([disabled]), #sidebar input')];
  const first = controls[0];
  const last = controls.at(-1);
  if (!first || !last) return;
  if (event.shiftKey && document.activeElement === first) {
    event.preventDefault();
    last.focus();
  } else if (!event.shiftKey && document.activeElement === last) {
    event.preventDefault();
    first.focus();
  }
}

/** Keeps the keyboard focus in the list when what had it goes away. */
function focusNewChat() {
  document.querySelector<HTMLElement>('#sidebar .new-chat')?.focus();
}

/** Focuses the message box without following the link, whose hash would close the conversation. */
function skipToComposer(event: MouseEvent<HTMLAnchorElement>) {
  event.preventDefault();
  focusComposer();
}

function focusComposer() {
  document.getElementById('composer-input')?.focus();
}

function titleFrom(text: string): string {
  // The first line with words in it, as read: without the markdown that would show as symbols.
  const line = text.split('\n').map(plainLine).find((words) => words !== '') ?? '';
  // Counted in characters as shown, so that none is cut in half.
  const shown = characters(line);
  if (shown.length <= 60 && codePoints(line) <= MAX_TITLE_CODE_POINTS) return line || DEFAULT_TITLE;
  return `${cutToCodePoints(shown.slice(0, 57).join(''), MAX_TITLE_CODE_POINTS - 1)}…`;
}

/**
 * A line of markdown as words: no code fence or rule, heading, quote, list or task marker, code
 * ticks, link or image syntax (their text stays) or autolink brackets, table pipes (the cells stay,
 * a delimiter row goes), emphasis marks (only paired ones outside words: `snake_case` and `2**10`
 * keep theirs) or backslashes that escape a mark.
 */
function plainLine(line: string): string {
  if (/^\s*(```|~~~)/.test(line) || /^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) return '';
  const cells = /^\s*\|(.*)\|\s*$/.exec(line)?.[1]?.split('|').map((cell) => cell.trim());
  if (cells) return cells.every((cell) => /^:?-*:?$/.test(cell)) ? '' : plainLine(cells.filter((cell) => cell !== '').join(', '));
  return withoutLinks(line)
    .replace(/^\s*(#{1,6}(\s+|$)|>\s*|[-*+]\s+(\[[ xX]\]\s+)?|\d+[.)]\s+)+/, '')
    .replace(/<((https?|mailto):[^\s>]+)>/g, '$1')
    .replace(/`([^`]+)`/g, '$1')
    .replace(/(?<![\w*~\\])(\*\*|\*|__|_|~~)(?=\S)(.+?)(?<=[^\s\\])\1(?![\w*~])/g, '$2')
    .replace(/\\([\\`*_{}[\]()#+\-.!|~<>])/g, '$1')
    .trim();
}

/**
 * Links and images as their text, from the inside out: a badge is an image inside a link. An
 * address may hold one level of parentheses, as Wikipedia's do.
 */
function withoutLinks(line: string): string {
  const link = /!?\[([^\]]*)\]\((?:[^()]|\([^()]*\))*\)/g;
  let text = line;
  for (let before = ''; before !== text; ) {
    before = text;
    text = text.replace(link, '$1');
  }
  return text;
}
