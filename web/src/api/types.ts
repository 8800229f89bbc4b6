/** Shapes of the chat-server JSON API (`/api/v1`). */

export interface Conversation {
  id: string;
  title: string;
  /** RFC 3339 */
  created_at: string;
  /** RFC 3339 */
  updated_at: string;
}

export type Role = 'user' | 'assistant';

export interface Message {
  id: string;
  conversation_id: string;
  role: Role;
  content: string;
  /** RFC 3339 */
  created_at: string;
}

export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

/** A stored user message and the assistant's reply to it. */
export interface Exchange {
  user_message: Message;
  assistant_message: Message;
}

/** Body of every error response: `{"status":"error","message":...,"code":...}`. */
export interface ErrorBody {
  status: 'error';
  message: string;
  code?: string;
}

/** The server's limits on texts, in characters as it counts them (code points). */
export interface Limits {
  max_message_chars: number;
  max_title_chars: number;
}
