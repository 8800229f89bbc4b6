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
 * The text this tab sent to a conversation, until its reply ends: when a reply this tab follows
 * fails, only the tab that sent its message (before a reload too) puts the text back in the
 * message box, not every tab that watched it.
 */
const sent = tabStore('chat:sent:');

/**
 * A message this tab sent: its text, and the id of the newest message shown when it was sent, so
 * that an earlier exchange of the same text is not taken for its reply.
 */
export interface SentMark {
  text: string;
  after: string | null;
}

export function markSent(conversationId: string, text: string, after: string | null = null) {
  sent.set(conversationId, JSON.stringify({ text, after } satisfies SentMark));
}

/** What this tab (before a reload too) last sent to the conversation, while its reply has not ended. */
export function sentMark(conversationId: string): SentMark | null {
  const stored = sent.get(conversationId);
  if (stored === null) return null;
  try {
    const mark = JSON.parse(stored) as Partial<SentMark> | null;
    if (typeof mark?.text === 'string') return { text: mark.text, after: typeof mark.after === 'string' ? mark.after : null };
  } catch {
    // An earlier version of the client kept the text alone.
  }
  return { text: stored, after: null };
}

/** Whether this tab (before a reload too) sent `text` to the conversation and its reply has not ended. */
export function sentHere(conversationId: string, text: string): boolean {
  return sentMark(conversationId)?.text === text;
}

/**
 * Forgets `text` as sent once its reply ended. A later send to the conversation replaced its mark
 * with its own, which stays: that reply has not ended.
 */
export function clearSent(conversationId: string, text: string) {
  if (sentHere(conversationId, text)) sent.remove(conversationId);
}
