import { type FormEvent, type KeyboardEvent, type RefObject, useLayoutEffect, useRef } from 'react';
import { codePoints } from '../text';

interface Props {
  value: string;
  onChange: (value: string) => void;
  onSend: () => void;
  onStop: () => void;
  streaming: boolean;
  inputRef?: RefObject<HTMLTextAreaElement | null>;
  /** The server's limit on a message, in characters as it counts them; null while unknown. */
  maxChars?: number | null;
}

/** From this share of the limit on, the box shows how many characters it holds. */
const COUNT_FROM = 0.9;

/**
 * How long after a Stop a send is not taken unless the text was edited since: Send comes back in
 * Stop's place, with the stopped message back in the box, so the second click of a double-click
 * (or a second Enter) on Stop would send it again.
 */
const SEND_HELD_AFTER_STOP_MS = 600;

/**
 * The message box: Enter sends, Shift+Enter adds a line; Stop replaces Send while a reply streams.
 * Near the server's limit it counts the characters; over it, it says so and does not send.
 */
export function Composer({ value, onChange, onSend, onStop, streaming, inputRef, maxChars = null }: Props) {
  const empty = value.trim() === '';
  // Walked through only once long enough to be near the limit (its UTF-16 length is never less
  // than its count of code points), not on every key of a short text.
  const counted = maxChars !== null && value.length >= maxChars * COUNT_FROM ? codePoints(value) : null;
  const count = counted !== null && maxChars !== null && counted >= maxChars * COUNT_FROM ? counted : null;
  const tooLong = count !== null && maxChars !== null && count > maxChars;
  const sendable = !empty && !tooLong;
  const lastFocused = useRef<Element | null>(null);
  const stoppedAt = useRef(Number.NEGATIVE_INFINITY);
  const send = () => {
    if (sendable && !streaming && performance.now() - stoppedAt.current >= SEND_HELD_AFTER_STOP_MS) onSend();
  };
  const stop = () => {
    stoppedAt.current = performance.now();
    onStop();
  };

  // Send and Stop replace each other: when the one that had focus goes, focus would fall to the
  // page and the next Tab start from its top. It goes to the message box instead.
  useLayoutEffect(() => {
    const lost = document.activeElement === null || document.activeElement === document.body;
    if (lost && lastFocused.current !== null && !lastFocused.current.isConnected) inputRef?.current?.focus();
  }, [streaming, inputRef]);

  const submit = (e: FormEvent) => {
    e.preventDefault();
    send();
  };

  const onKeyDown = (e: KeyboardEvent<HTMLTextAreaElement>) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.nativeEvent.isComposing) {
      e.preventDefault();
      send();
    }
  };

  return (
    <form className="composer" onSubmit={submit} onFocus={(e) => (lastFocused.current = e.target)}>
      <label htmlFor="composer-input" className="visually-hidden">
        Message
      </label>
      <div className="composer-field">
        <textarea
          id="composer-input"
          ref={inputRef}
          value={value}
          rows={2}
          placeholder="Write a message…"
          dir="auto"
          onChange={(e) => {
            stoppedAt.current = Number.NEGATIVE_INFINITY;
            onChange(e.target.value);
          }}
          onKeyDown={onKeyDown}
          aria-describedby={count === null ? 'composer-hint' : 'composer-hint composer-count'}
          aria-invalid={tooLong || undefined}
        />
        {count !== null && maxChars !== null && (
          <p id="composer-count" className={tooLong ? 'composer-count over' : 'composer-count'}>
            {count.toLocaleString('en')} / {maxChars.toLocaleString('en')} characters{tooLong && ' · too long to send'}
          </p>
        )}
        {/* Said once when the text goes over, not on every key: the count is not a live region. */}
        <span role="status" className="visually-hidden">
          {tooLong && maxChars !== null ? `Too long to send: the limit is ${maxChars.toLocaleString('en')} characters.` : ''}
        </span>
      </div>
      <span id="composer-hint" className="visually-hidden">
        Enter sends, Shift+Enter adds a new line.
      </span>
      {streaming ? (
        // Separate elements (keys): a Send pressed from the keyboard must not leave focus on Stop.
        // Stop takes Send's place: the second click of a double-click on Send is not a Stop.
        <button key="stop" type="button" className="button stop" onClick={(e) => e.detail < 2 && stop()}>
          Stop
        </button>
      ) : (
        <button key="send" type="submit" className="button primary" disabled={!sendable}>
          Send
        </button>
      )}
    </form>
  );
}
