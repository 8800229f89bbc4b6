/**
 * Unsent text per conversation (`null`: a chat not created yet), kept in the tab's
 * sessionStorage so that reloading the page loses nothing typed. A draft storage refuses
 * (private mode, quota) is kept in memory instead, for as long as the page lives.
 */
const PREFIX = 'chat:draft:';
const refusedByStorage = new Map<string | null, string>();

const keyOf = (conversationId: string | null) => PREFIX + (conversationId ?? 'new');

export function loadDraft(conversationId: string | null): string {
  let stored: string | null = null;
  try {
    stored = sessionStorage.getItem(keyOf(conversationId));
  } catch {
    // Storage refused: only memory has it.
  }
  return stored ?? refusedByStorage.get(conversationId) ?? '';
}

export function saveDraft(conversationId: string | null, text: string) {
  try {
    if (text === '') sessionStorage.removeItem(keyOf(conversationId));
    else sessionStorage.setItem(keyOf(conversationId), text);
    refusedByStorage.delete(conversationId);
  } catch {
    if (text === '') refusedByStorage.delete(conversationId);
    else refusedByStorage.set(conversationId, text);
    try {
      // An older draft left there would be read instead of this one.
      sessionStorage.removeItem(keyOf(conversationId));
    } catch {
      // Storage refuses everything: memory alone holds drafts.
    }
  }
}

const SENT_PREFIX = 'chat:sent:';
const sentInMemory = new Map<string, string>();

/**
 * Remembers the text this tab sent to a conversation until its reply ends, in the tab's
 * sessionStorage so that a reload keeps it: when a reply this tab follows fails, only the tab
 * that sent its message puts the text back in the message box, not every tab that watched it.
 */
export function markSent(conversationId: string, text: string) {
  try {
    sessionStorage.setItem(SENT_PREFIX + conversationId, text);
    sentInMemory.delete(conversationId);
  } catch {
    // Storage refused: this page remembers it until it is reloaded.
    sentInMemory.set(conversationId, text);
  }
}

/** Whether this tab (before a reload too) sent `text` to the conversation and its reply has not ended. */
export function sentHere(conversationId: string, text: string): boolean {
  try {
    const stored = sessionStorage.getItem(SENT_PREFIX + conversationId);
    if (stored !== null) return stored === text;
  } catch {
    // Storage refused: only memory has it.
  }
  return sentInMemory.get(conversationId) === text;
}

export function clearSent(conversationId: string) {
  sentInMemory.delete(conversationId);
  try {
    sessionStorage.removeItem(SENT_PREFIX + conversationId);
  } catch {
    // Storage refuses everything: memory alone held it.
  }
}
