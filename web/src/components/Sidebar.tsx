import { useLayoutEffect, useRef, useState } from 'react';
import type { Conversation } from '../api/types';
import { ConfirmDialog } from './ConfirmDialog';
import { type ChosenBy, ConversationItem } from './ConversationItem';

interface Props {
  id: string;
  open: boolean;
  conversations: Conversation[];
  selectedId: string | null;
  loading: boolean;
  /** The list could not be loaded: what shows is only what this tab learned of since. */
  listFailed: boolean;
  onRetryList: () => void;
  hasMore: boolean;
  error: string | null;
  onSelect: (id: string, chosenBy: ChosenBy) => void;
  onNew: () => void;
  onRename: (id: string, title: string) => Promise<void>;
  /** Resolves whether the conversation is gone. */
  onDelete: (id: string) => Promise<boolean>;
  onLoadMore: () => void;
}

export function Sidebar(props: Props) {
  const { conversations, selectedId } = props;
  const [confirming, setConfirming] = useState<Conversation | null>(null);
  const moreRef = useRef<HTMLButtonElement>(null);
  /** How many conversations were listed when "Show more" was pressed while it had the focus. */
  const focusFrom = useRef<number | null>(null);

  // Once the page is in, "Show more" keeps the focus if it stays; if it went (nothing more), the
  // focus goes to the first conversation it brought, not to the page. A layout effect: a passive
  // one of the render that showed the button may still be pending when it is pressed, and would
  // take that press for its page having come.
  useLayoutEffect(() => {
    if (props.loading || focusFrom.current === null) return;
    const from = focusFrom.current;
    focusFrom.current = null;
    if (props.hasMore) return;
    const links = document.querySelectorAll<HTMLElement>(`#${props.id} .conversation-link`);
    (links[from] ?? links[links.length - 1])?.focus();
  }, [props.loading, props.hasMore, props.id]);

  const showMore = () => {
    if (props.loading) return;
    focusFrom.current = document.activeElement === moreRef.current ? conversations.length : null;
    props.onLoadMore();
  };

  return (
    <nav id={props.id} className={`sidebar${props.open ? ' open' : ''}`} aria-label="Conversations">
      <button type="button" className="button primary new-chat" onClick={props.onNew}>
        <span aria-hidden="true">+</span> New chat
      </button>
      {props.error && (
        <p className="sidebar-error" role="alert">
          {props.error}
        </p>
      )}
      {props.listFailed && (
        <p className="sidebar-state" role="status">
          Could not load your conversations.{' '}
          <button type="button" className="button small" onClick={props.onRetryList}>
            Retry loading conversations
          </button>
        </p>
      )}
      {props.loading && conversations.length === 0 ? (
        <p className="sidebar-state" role="status">
          Loading conversations…
        </p>
      ) : conversations.length === 0 ? (
        !props.listFailed && <p className="sidebar-state">No conversations yet.</p>
      ) : (
        <ul className="conversation-list">
          {conversations.map((c) => (
            <ConversationItem
              key={c.id}
              conversation={c}
              selected={c.id === selectedId}
              onSelect={(chosenBy) => props.onSelect(c.id, chosenBy)}
              onRename={(title) => props.onRename(c.id, title)}
              onDelete={() => setConfirming(c)}
            />
          ))}
        </ul>
      )}
      {props.hasMore && (
        // Not disabled while loading: a disabled button drops the keyboard focus.
        <button type="button" className="button small load-more" ref={moreRef} onClick={showMore} aria-disabled={props.loading}>
          {props.loading ? 'Loading…' : 'Show more'}
        </button>
      )}
      {confirming && (
        <ConfirmDialog
          title="Delete conversation?"
          message={`“${confirming.title}” and all its messages will be deleted. This cannot be undone.`}
          confirmLabel="Delete"
          onCancel={() => setConfirming(null)}
          onConfirm={() => {
            const target = confirming;
            setConfirming(null);
            // The deleted conversation's buttons go away with it: keep keyboard focus in the list.
            void props.onDelete(target.id).then((deleted) => {
              if (deleted) document.querySelector<HTMLElement>(`#${props.id} .new-chat`)?.focus();
            });
          }}
        />
      )}
    </nav>
  );
}
