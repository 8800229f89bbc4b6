import { useEffect, useState } from 'react';
import type { Role } from '../api/types';
import { Markdown } from './Markdown';

interface Props {
  role: Role;
  content: string;
  /** "streaming" shows a typing cursor; "stopped" notes the reply was cut short here. */
  state?: 'streaming' | 'stopped';
}

export function MessageItem({ role, content, state }: Props) {
  return (
    <article className={`message ${role}`} aria-label={role === 'user' ? 'You' : 'Assistant'} data-state={state}>
      <div className="message-author" aria-hidden="true">
        {role === 'user' ? 'You' : 'Assistant'}
      </div>
      <div className="message-body">
        {content === '' && state === 'streaming' ? (
          <span className="typing">Thinking…</span>
        ) : (
          <Markdown text={content} />
        )}
        {state === 'stopped' && <p className="message-note">Stopped. The full reply will appear once the server has stored it.</p>}
      </div>
      {state === undefined && <CopyButton text={content} />}
    </article>
  );
}

type CopyState = 'idle' | 'copied' | 'failed';

/** Copies the message's text as written (its markdown source), and says for a moment whether it did. */
function CopyButton({ text }: { text: string }) {
  const [copy, setCopy] = useState<CopyState>('idle');
  useEffect(() => {
    if (copy === 'idle') return;
    const timer = setTimeout(() => setCopy('idle'), 2000);
    return () => clearTimeout(timer);
  }, [copy]);
  const onCopy = () => {
    // The Clipboard API exists only on secure origins (https, localhost).
    const written = navigator.clipboard?.writeText(text) ?? Promise.reject(new Error('no clipboard'));
    written.then(
      () => setCopy('copied'),
      () => setCopy('failed'),
    );
  };
  return (
    <div className="message-actions">
      <button type="button" onClick={onCopy} aria-live="polite">
        {copy === 'copied' ? 'Copied' : copy === 'failed' ? 'Copy failed' : 'Copy'}
      </button>
    </div>
  );
}
