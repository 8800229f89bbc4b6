import { useEffect, useRef, useState, type FormEvent, type KeyboardEvent, type MouseEvent } from 'react';
import type { Conversation } from '../api/types';
import { MAX_TITLE_CODE_POINTS, codePoints, cutToCodePoints } from '../text';

/**
 * How a chat was chosen in the list. `keyboard` also stands for assistive technology, whose
 * activations come with no pointer; a pen counts as touch, as it is used on tablets.
 */
export type ChosenBy = 'mouse' | 'touch' | 'keyboard';

interface Props {
  conversation: Conversation;
  selected: boolean;
  onSelect: (chosenBy: ChosenBy) => void;
  onRename: (title: string) => Promise<void>;
  onDelete: () => void;
}

export function ConversationItem({ conversation, selected, onSelect, onRename, onDelete }: Props) {
  const [editing, setEditing] = useState(false);
  const [title, setTitle] = useState(conversation.title);
  const [saving, setSaving] = useState(false);
  const inputRef = useRef<HTMLInputElement>(null);
  const renameRef = useRef<HTMLButtonElement>(null);
  /** What pressed the title last, for browsers whose clicks do not say (they are no PointerEvent). */
  const pressedBy = useRef<string | null>(null);
  const chosenBy = (event: MouseEvent): ChosenBy => {
    // A click of detail 0 was made with the keyboard.
    if (event.detail === 0) return 'keyboard';
    const pointer = (event.nativeEvent as Partial<PointerEvent>).pointerType || pressedBy.current;
    pressedBy.current = null;
    if (pointer === 'mouse') return 'mouse';
    return pointer === 'touch' || pointer === 'pen' ? 'touch' : 'keyboard';
  };

  useEffect(() => {
    if (editing) inputRef.current?.select();
  }, [editing]);

  const startEditing = () => {
    setTitle(conversation.title);
    setEditing(true);
  };

  const finish = () => {
    setEditing(false);
    setTimeout(() => renameRef.current?.focus());
  };

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const next = title.trim();
    if (next === '' || next === conversation.title) {
      finish();
      return;
    }
    setSaving(true);
    try {
      await onRename(next);
      finish();
    } catch {
      // The sidebar shows the error; keep the field open with what was typed, and the focus in it.
      inputRef.current?.focus();
    } finally {
      setSaving(false);
    }
  };

  const onKeyDown = (e: KeyboardEvent) => {
    if (e.key === 'Escape') {
      // Ends the edit only; the phone menu around it stays open.
      e.preventDefault();
      e.stopPropagation();
      finish();
    }
  };

  if (editing) {
    return (
      <li className="conversation-item editing" data-id={conversation.id}>
        <form onSubmit={(e) => void submit(e)} className="rename-form">
          <label htmlFor={`rename-${conversation.id}`} className="visually-hidden">
            Conversation title
          </label>
          <input
            id={`rename-${conversation.id}`}
            ref={inputRef}
            value={title}
            dir="auto"
            onChange={(e) => setTitle((typed) => withinTitleLimit(e.target.value, typed))}
            onKeyDown={onKeyDown}
            readOnly={saving}
          />
          <button type="submit" className="button small primary" disabled={saving || title.trim() === ''}>
            Save
          </button>
          <button type="button" className="button small" onClick={finish}>
            Cancel
          </button>
        </form>
      </li>
    );
  }

  return (
    <li className={`conversation-item${selected ? ' selected' : ''}`} data-id={conversation.id}>
      <button
        type="button"
        className="conversation-link"
        aria-current={selected ? 'page' : undefined}
        onPointerDown={(event) => {
          pressedBy.current = event.pointerType;
        }}
        onClick={(event) => onSelect(chosenBy(event))}
      >
        {/* The list cuts a long title short; hovering shows all of it. */}
        <span className="conversation-title" dir="auto" title={conversation.title}>
          {conversation.title}
        </span>
      </button>
      <div className="conversation-actions">
        <button type="button" className="icon-button" ref={renameRef} onClick={startEditing} aria-label={`Rename ${conversation.title}`} title="Rename">
          <svg viewBox="0 0 24 24" aria-hidden="true" focusable="false">
            <path d="M4 20h4L19 9l-4-4L4 16v4zm11-15 4 4" fill="none" stroke="currentColor" strokeWidth="2" strokeLinejoin="round" />
          </svg>
        </button>
        <button type="button" className="icon-button" onClick={onDelete} aria-label={`Delete ${conversation.title}`} title="Delete">
          <svg viewBox="0 0 24 24" aria-hidden="true" focusable="false">
            <path d="M5 7h14M10 7V4h4v3m-7 0 1 13h8l1-13" fill="none" stroke="currentColor" strokeWidth="2" strokeLinejoin="round" />
          </svg>
        </button>
      </div>
    </li>
  );
}

/**
 * `edited` held to the server's limit in whole characters (`maxLength` counts UTF-16 units: it
 * would allow 100 emoji). An edit that would only shorten what
 * was there (a character typed into a full title) is refused, as `maxLength` refuses it, rather
 * than cutting the title's end; a paste into a shorter title keeps what fits.
 */
function withinTitleLimit(edited: string, before: string): string {
  if (codePoints(edited) <= MAX_TITLE_CODE_POINTS) return edited;
  const cut = cutToCodePoints(edited, MAX_TITLE_CODE_POINTS);
  return codePoints(cut) > codePoints(before) ? cut : before;
}
