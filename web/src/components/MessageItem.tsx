import { memo } from 'react';
import type { Role } from '../api/types';
import { CopyButton } from './CopyButton';
import { Markdown, StreamingMarkdown } from './Markdown';

interface Props {
  role: Role;
  content: string;
  /**
   * Not stored yet: "sending" is the user's message on its way, "streaming" shows a typing
   * cursor, "stopped" and "interrupted" note the reply was cut short here, by Stop or by a lost
   * connection, "stoppedUnanswered" that Stop came before the server answered, and "unanswered"
   * that a proxy gave up waiting for the server's answer. Only a stored message can be copied.
   */
  state?: 'sending' | 'streaming' | 'stopped' | 'stoppedUnanswered' | 'unanswered' | 'interrupted';
  /** Streaming, its connection lost and being tried again: said under the reply so far. */
  reconnecting?: boolean;
}

const AWAITED = 'The full reply will appear once the server has stored it.';
const IF_TAKEN = 'If it took the message, its reply will appear once stored.';
const STOPPED_BEFORE_ANY_TEXT = 'Stopped before the reply began. If the server goes on with it, the reply will appear once stored.';
const CUT_SHORT: Partial<Record<NonNullable<Props['state']>, string>> = {
  stopped: `Stopped. ${AWAITED}`,
  // Not a promise: a server that restarted mid-reply has lost it.
  interrupted: 'Connection lost. Waiting for the server to store the reply; if it restarted, the reply is lost.',
  stoppedUnanswered: `Stopped before the server answered. ${IF_TAKEN}`,
  unanswered: `A proxy gave up waiting for the server's answer. ${IF_TAKEN}`,
};

/**
 * Memoised: its props are plain values, and the view re-renders on every keystroke in the
 * composer and every streamed piece, which would otherwise parse every loaded message again.
 */
export const MessageItem = memo(function MessageItem({ role, content, state, reconnecting = false }: Props) {
  // Stopped with no text yet, there may be no reply to wait for (the stop ended it on the server).
  const cutShort = state === 'stopped' && content === '' ? STOPPED_BEFORE_ANY_TEXT : state && CUT_SHORT[state];
  return (
    <article className={`message ${role}`} aria-label={role === 'user' ? 'You' : 'Assistant'} data-state={state}>
      <div className="message-author" aria-hidden="true">
        {role === 'user' ? 'You' : 'Assistant'}
      </div>
      <div className="message-body">
        {state !== 'streaming' ? (
          <Markdown text={content} />
        ) : content === '' ? (
          <span className="typing">Thinking…</span>
        ) : (
          <StreamingMarkdown text={content} />
        )}
        {cutShort && <p className="message-note">{cutShort}</p>}
        {/* A status region: said once as the connection drops, not for every try. */}
        {state === 'streaming' && (
          <p className="message-note" role="status">
            {reconnecting ? 'Connection lost. Reconnecting…' : ''}
          </p>
        )}
      </div>
      {/* Its markdown source, as written. */}
      {state === undefined && <CopyButton text={() => content} className="message-actions" />}
    </article>
  );
});
