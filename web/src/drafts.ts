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
