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
    </article>
  );
}
