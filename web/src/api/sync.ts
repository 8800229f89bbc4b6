import type { Conversation } from './types';

/** What one tab of the app tells the others in the same browser, so they show it without a reload. */
export type SyncEvent =
  /** Created or renamed. */
  | { kind: 'upserted'; conversation: Conversation }
  /** `onAnotherDevice`: found deleted by a read of the server, not deleted in a tab here. */
  | { kind: 'deleted'; id: string; onAnotherDevice?: boolean }
  /** An exchange was stored in the conversation. */
  | { kind: 'stored'; id: string; updatedAt: string }
  /** A reply began streaming in the conversation, to a message sent in that tab. */
  | { kind: 'replying'; id: string };

export interface TabSync {
  post: (event: SyncEvent) => void;
  close: () => void;
}

const CHANNEL = 'chat-tabs';

/**
 * Joins the tabs' channel; `onEvent` hears the other tabs (never this one's own posts). Without
 * BroadcastChannel each tab simply stays on its own until reloaded.
 */
export function joinTabs(onEvent: (event: SyncEvent) => void): TabSync {
  if (typeof BroadcastChannel !== 'function') return { post: () => undefined, close: () => undefined };
  const channel = new BroadcastChannel(CHANNEL);
  channel.onmessage = (message: MessageEvent<unknown>) => {
    // Another version of the app in another tab may say things this one does not know.
    if (isSyncEvent(message.data)) onEvent(message.data);
  };
  return { post: (event) => channel.postMessage(event), close: () => channel.close() };
}

function isSyncEvent(data: unknown): data is SyncEvent {
  if (typeof data !== 'object' || data === null) return false;
  const event = data as Record<string, unknown>;
  switch (event.kind) {
    case 'upserted':
      return typeof event.conversation === 'object' && event.conversation !== null;
    case 'deleted':
    case 'replying':
      return typeof event.id === 'string';
    case 'stored':
      return typeof event.id === 'string' && typeof event.updatedAt === 'string';
    default:
      return false;
  }
}
