import { takeChatCreatedAsPageWasLeft } from './drafts';

/** The address of a new chat not sent from yet, so a reload or a link comes back to it. */
export const NEW_CHAT_HASH = '#/new';

export function conversationHash(id: string): string {
  return `#/c/${encodeURIComponent(id)}`;
}

/** The conversation the address names, if any. */
export function idFromHash(): string | null {
  const m = /^#\/c\/([^/?#]+)$/.exec(window.location.hash);
  if (!m?.[1]) return null;
  try {
    return decodeURIComponent(m[1]);
  } catch {
    // A mangled link (`%E0`) names no conversation; throwing here would blank the whole app.
    return null;
  }
}

/**
 * For the page's start: a reload begun as a first send created its chat, before the address named
 * it, opens that chat rather than the empty new chat it was reloaded from.
 */
export function openChatCreatedAsPageWasLeft() {
  const id = takeChatCreatedAsPageWasLeft();
  if (id === null || (window.location.hash !== '' && window.location.hash !== NEW_CHAT_HASH)) return;
  history.replaceState(null, '', `${window.location.pathname}${window.location.search}${conversationHash(id)}`);
}
