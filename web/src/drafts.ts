import { newConversationId } from './api/client';

/**
 * Text kept per conversation in the tab's sessionStorage, so that reloading the page loses none
 * of it: unsent drafts, and the message this tab sent whose reply has not ended. A value storage
 * refuses (private mode, quota) is kept in memory instead, for as long as the page lives.
 */
function tabStore(prefix: string) {
  const refusedByStorage = new Map<string, string>();
  const remove = (key: string) => {
    refusedByStorage.delete(key);
    try {
      sessionStorage.removeItem(prefix + key);
    } catch {
      // Storage refuses everything: memory alone held it.
    }
  };
  return {
    get(key: string): string | null {
      try {
        const stored = sessionStorage.getItem(prefix + key);
        if (stored !== null) return stored;
      } catch {
        // Storage refused: only memory has it.
      }
      return refusedByStorage.get(key) ?? null;
    },
    set(key: string, value: string) {
      try {
        sessionStorage.setItem(prefix + key, value);
        refusedByStorage.delete(key);
      } catch {
        // An older value left in storage would be read instead of this one.
        remove(key);
        refusedByStorage.set(key, value);
      }
    },
    remove,
  };
}

/** Unsent text per conversation; `null` is a chat not created yet. */
const drafts = tabStore('chat:draft:');
const draftKey = (conversationId: string | null) => conversationId ?? 'new';

export function loadDraft(conversationId: string | null): string {
  return drafts.get(draftKey(conversationId)) ?? '';
}

export function saveDraft(conversationId: string | null, text: string) {
  if (text === '') drafts.remove(draftKey(conversationId));
  else drafts.set(draftKey(conversationId), text);
}

/**
 * The messages this tab sent to a conversation, until their replies end: when a reply this tab
 * follows fails, only the tab that sent its message (before a reload too) puts the text back in
 * the message box, not every tab that watched it. Several can wait at once (a message sent after
 * Stop, before the stopped reply was stored).
 */
const SENT_PREFIX = 'chat:sent:';
const sent = tabStore(SENT_PREFIX);
/** Marks kept per conversation, the oldest dropped first: a bound on what a tab keeps. */
const MAX_MARKS = 20;

/**
 * A message this tab sent: its text, and the id of the newest message shown when it was sent, so
 * that an earlier exchange of the same text is not taken for its reply.
 */
export interface SentMark {
  text: string;
  after: string | null;
  /**
   * While the server has not taken it: when it was sent (ms since the epoch). A request cut by a
   * reload may still reach the server for a while. Marks of earlier versions have none.
   */
  untakenSince?: number;
  /** A first send's: the id of the chat it is creating. Marks of earlier versions have none. */
  chat?: string;
}

function isMark(value: unknown): value is SentMark {
  const mark = value as Partial<SentMark> | null;
  return (
    typeof mark?.text === 'string' &&
    (mark.after === null || typeof mark.after === 'string') &&
    (mark.untakenSince === undefined || typeof mark.untakenSince === 'number') &&
    (mark.chat === undefined || typeof mark.chat === 'string')
  );
}

/** This tab's marks for the conversation, oldest first. */
export function sentMarks(conversationId: string): SentMark[] {
  const stored = sent.get(conversationId);
  if (stored === null) return [];
  try {
    const marks: unknown = JSON.parse(stored);
    if (Array.isArray(marks) && marks.every(isMark)) return marks;
    // Earlier versions of the client kept one mark, then the text alone.
    if (isMark(marks)) return [marks];
  } catch {
    // Not JSON: the text alone.
  }
  return [{ text: stored, after: null }];
}

function saveMarks(conversationId: string, marks: SentMark[]) {
  if (marks.length === 0) sent.remove(conversationId);
  else sent.set(conversationId, JSON.stringify(marks.slice(-MAX_MARKS)));
}

export function markSent(conversationId: string, text: string, after: string | null = null) {
  saveMarks(conversationId, [...sentMarks(conversationId), { text, after, untakenSince: Date.now() }]);
}

/** The server took the oldest message of `text` not known to be taken: it cannot arrive late. */
export function markTaken(conversationId: string, text: string) {
  const marks = sentMarks(conversationId);
  const at = marks.findIndex((mark) => mark.text === text && mark.untakenSince !== undefined);
  if (at >= 0) saveMarks(conversationId, marks.map((mark, i) => (i === at ? { text: mark.text, after: mark.after } : mark)));
}

/** Whether this tab (before a reload too) sent `text` to the conversation and its reply has not ended. */
export function sentHere(conversationId: string, text: string): boolean {
  return sentMarks(conversationId).some((mark) => mark.text === text);
}

/** Forgets one message of `text` as sent, the oldest, once its reply ended; the others stay. */
export function clearSent(conversationId: string, text: string) {
  const marks = sentMarks(conversationId);
  const at = marks.findIndex((mark) => mark.text === text);
  if (at >= 0) saveMarks(conversationId, [...marks.slice(0, at), ...marks.slice(at + 1)]);
}

/** A conversation deleted: what this tab kept for it (its draft, its sent marks) goes with it. */
export function forgetConversation(conversationId: string) {
  saveDraft(conversationId, '');
  saveMarks(conversationId, []);
  page.remove(chatToCreateKey(conversationId));
}

/**
 * What must outlive a reload besides texts: the chat a first send created, and the one a first
 * send could not be sure it created.
 */
const page = tabStore('chat:page:');

/** Where a first send waits while its chat is being created, under the sent marks. */
const CREATING = 'creating:';
const creatingKey = (writtenIn: string | null) => CREATING + draftKey(writtenIn);

/**
 * A first send creating chat `chat`: its text has left the message box it was written in (a new
 * chat's, or a deleted conversation's), and no chat holds it yet. Cleared once the chat exists and
 * the text is marked sent there, or back in the box.
 */
export function markCreating(writtenIn: string | null, text: string, chat: string) {
  const key = creatingKey(writtenIn);
  saveMarks(key, [...sentMarks(key), { text, after: null, chat }]);
}

export function clearCreating(writtenIn: string | null, text: string) {
  clearSent(creatingKey(writtenIn), text);
}

/** Where a box keeps the id of the chat its first send could not be sure it created. */
const CHAT_TO_CREATE = 'chat-to-create:';
const chatToCreateKey = (writtenIn: string | null) => CHAT_TO_CREATE + draftKey(writtenIn);

/**
 * The id the next first send from this box gives the chat it creates: the one a send from there
 * tried last, if its create got no answer (the connection dropped, the page was reloaded), so that
 * the chat that create may have made is found again rather than left behind, empty; a new one
 * otherwise. Taken, so that a second send from the box while this one creates makes a chat of its own.
 */
export function takeChatToCreate(writtenIn: string | null): string {
  const key = chatToCreateKey(writtenIn);
  const kept = page.get(key);
  page.remove(key);
  return kept ?? newConversationId();
}

/** A first send from this box did not learn whether it created chat `id`: the next one asks again. */
export function keepChatToCreate(writtenIn: string | null, id: string) {
  page.set(chatToCreateKey(writtenIn), id);
}

/**
 * For the page's start: a reload while a first send's chat was being created ended that send
 * before the chat held its text, so the text goes back into the message box it was written in,
 * and the next first send from there asks for the same chat.
 */
export function restoreFirstSendsCutOff() {
  const prefix = SENT_PREFIX + CREATING;
  const boxes: string[] = [];
  try {
    for (let i = 0; i < sessionStorage.length; i += 1) {
      const key = sessionStorage.key(i);
      if (key?.startsWith(prefix)) boxes.push(key.slice(prefix.length));
    }
  } catch {
    // Storage refuses everything: nothing outlived the reload.
    return;
  }
  for (const box of boxes) {
    const marks = takeSentMarks(CREATING + box);
    drafts.set(box, withUnsentMarks(marks)(drafts.get(box) ?? ''));
    const chat = marks.filter((mark) => mark.chat !== undefined).at(-1)?.chat;
    if (chat !== undefined) page.set(chatToCreateKey(box), chat);
  }
}

/** This tab's marks for the conversation, oldest first, forgotten as they are returned. */
export function takeSentMarks(conversationId: string): SentMark[] {
  const marks = sentMarks(conversationId);
  saveMarks(conversationId, []);
  return marks;
}

const CREATED_CHAT = 'created-chat';

/**
 * The chat a first send just created in the new chat on view, for as long as it is shown. A
 * reload begun before the page's address named it (the address it reloads is the new chat's)
 * comes back to this chat, where the send is looked for, rather than to an empty new chat.
 */
export function noteChatCreatedHere(id: string) {
  page.set(CREATED_CHAT, id);
}

/** Another chat (or a new one) is shown: a reload from there goes where its address says. */
export function forgetChatCreatedHereUnlessShown(shown: string | null) {
  if (page.get(CREATED_CHAT) !== shown) page.remove(CREATED_CHAT);
}

/** For the page's start: the chat a first send created as the previous page was left, if any. */
export function takeChatCreatedAsPageWasLeft(): string | null {
  const id = page.get(CREATED_CHAT);
  page.remove(CREATED_CHAT);
  return id;
}

/** A draft with text that was not sent put back in front of whatever was typed since. */
export function withUnsent(text: string): (draft: string) => string {
  return (draft) => (draft.trim() === '' ? text : `${text}\n${draft}`);
}

/** A draft with the texts of these marks put back in front of it, in the order they were sent. */
export function withUnsentMarks(marks: SentMark[]): (draft: string) => string {
  return (draft) => marks.reduceRight((text, mark) => withUnsent(mark.text)(text), draft);
}
