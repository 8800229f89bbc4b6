import { type FormEvent, type KeyboardEvent, type RefObject, useLayoutEffect, useRef } from 'react';

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
  const lastFocused = useRef<Element | null>(null);

  // Send and Stop replace each other: when the one that had focus goes, focus would fall to the
  // page and the next Tab start from its top. It goes to the message box instead.
  useLayoutEffect(() => {
    const lost = document.activeElement === null || document.activeElement === document.body;
    if (lost && lastFocused.current !== null && !lastFocused.current.isConnected) inputRef?.current?.focus();
  }, [streaming, inputRef]);

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
    <form className="composer" onSubmit={submit} onFocus={(e) => (lastFocused.current = e.target)}>
      <label htmlFor="composer-input" className="visually-hidden">
        Message
      </label>
      <textarea
        id="composer-input"
        ref={inputRef}
        value={value}
        rows={2}
        placeholder="Write a message…"
        dir="auto"
        onChange={(e) => onChange(e.target.value)}
        onKeyDown={onKeyDown}
        aria-describedby="composer-hint"
      />
      <span id="composer-hint" className="visually-hidden">
        Enter sends, Shift+Enter adds a new line.
      </span>
      {streaming ? (
        // Separate elements (keys): a Send pressed from the keyboard must not leave focus on Stop.
        // Stop takes Send's place: the second click of a double-click on Send is not a Stop.
        <button key="stop" type="button" className="button stop" onClick={(e) => e.detail < 2 && onStop()}>
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
