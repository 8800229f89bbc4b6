import { type FormEvent, type KeyboardEvent, type RefObject } from 'react';

interface Props {
  value: string;
  onChange: (value: string) => void;
  onSend: () => void;
  onStop: () => void;
  streaming: boolean;
  inputRef?: RefObject<HTMLTextAreaElement | null>;
}

/** The message box: Enter sends, Shift+Enter adds a line; Stop replaces Send while a reply streams. */
export function Composer({ value, onChange, onSend, onStop, streaming, inputRef }: Props) {
  const empty = value.trim() === '';

  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (!empty && !streaming) onSend();
  };

  const onKeyDown = (e: KeyboardEvent<HTMLTextAreaElement>) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.nativeEvent.isComposing) {
      e.preventDefault();
      if (!empty && !streaming) onSend();
    }
  };

  return (
    <form className="composer" onSubmit={submit}>
      <label htmlFor="composer-input" className="visually-hidden">
        Message
      </label>
      <textarea
        id="composer-input"
        ref={inputRef}
        value={value}
        rows={2}
        placeholder="Write a message…"
        onChange={(e) => onChange(e.target.value)}
        onKeyDown={onKeyDown}
        aria-describedby="composer-hint"
      />
      <span id="composer-hint" className="visually-hidden">
        Enter sends, Shift+Enter adds a new line.
      </span>
      {streaming ? (
        // Separate elements (keys): a Send pressed from the keyboard must not leave focus on Stop.
        <button key="stop" type="button" className="button stop" onClick={onStop}>
          Stop
        </button>
      ) : (
        <button key="send" type="submit" className="button primary" disabled={empty}>
          Send
        </button>
      )}
    </form>
  );
}
