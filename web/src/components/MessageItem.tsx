import { type MouseEvent, memo, useEffect, useState } from 'react';
import type { Role } from '../api/types';
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
}

const AWAITED = 'The full reply will appear once the server has stored it.';
const IF_TAKEN = 'If it took the message, its reply will appear once stored.';
const CUT_SHORT: Partial<Record<NonNullable<Props['state']>, string>> = {
  stopped: `Stopped. ${AWAITED}`,
  interrupted: `Connection lost. ${AWAITED}`,
  stoppedUnanswered: `Stopped before the server answered. ${IF_TAKEN}`,
  unanswered: `A proxy gave up waiting for the server's answer. ${IF_TAKEN}`,
};

/**
 * Memoised: its props are plain values, and the view re-renders on every keystroke in the
 * composer and every streamed piece, which would otherwise parse every loaded message again.
 */
export const MessageItem = memo(function MessageItem({ role, content, state }: Props) {
  const cutShort = state && CUT_SHORT[state];
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
      </div>
      {state === undefined && <CopyButton text={content} />}
    </article>
  );
});

type CopyOutcome = 'copied' | 'failed';

/**
 * Copies the message's text as written (its markdown source), and says for 2 s whether it did:
 * on the button, and in a status region, as a screen reader does not read out a button whose
 * name changes under it. Each click is its own object, so clicking again while it says "Copied"
 * starts the 2 s again.
 */
function CopyButton({ text }: { text: string }) {
  const [copy, setCopy] = useState<{ outcome: CopyOutcome } | null>(null);
  useEffect(() => {
    if (!copy) return;
    const timer = setTimeout(() => setCopy(null), 2000);
    return () => clearTimeout(timer);
  }, [copy]);
  const onCopy = (event: MouseEvent<HTMLButtonElement>) => {
    const button = event.currentTarget;
    copyText(text, button).then(
      () => setCopy({ outcome: 'copied' }),
      () => setCopy({ outcome: 'failed' }),
    );
  };
  return (
    <div className="message-actions">
      <button type="button" onClick={onCopy}>
        {copy?.outcome === 'copied' ? 'Copied' : copy?.outcome === 'failed' ? 'Copy failed' : 'Copy'}
      </button>
      <span className="visually-hidden" role="status">
        {copy?.outcome === 'copied' ? 'Copied to the clipboard.' : copy?.outcome === 'failed' ? 'The browser refused to copy.' : ''}
      </span>
    </div>
  );
}

/**
 * Puts `text` on the clipboard. The Clipboard API exists only on secure origins (https,
 * localhost); a server reached over plain http on a LAN address gets the older copy command,
 * which needs the text selected in the page for a moment. Focus then goes back to `from`.
 */
function copyText(text: string, from: HTMLElement): Promise<void> {
  if (navigator.clipboard) return navigator.clipboard.writeText(text);
  const area = document.createElement('textarea');
  area.value = text;
  area.setAttribute('readonly', '');
  area.style.position = 'fixed';
  area.style.opacity = '0';
  document.body.append(area);
  area.select();
  const copied = document.execCommand('copy');
  area.remove();
  from.focus();
  return copied ? Promise.resolve() : Promise.reject(new Error('the browser refused to copy'));
}
