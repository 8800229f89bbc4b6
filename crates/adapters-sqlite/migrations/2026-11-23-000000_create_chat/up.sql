CREATE TABLE conversations (
    id TEXT PRIMARY KEY NOT NULL,
    title TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    -- Highest message position used so far; bumping it serialises appends to one conversation.
    last_position BIGINT NOT NULL DEFAULT 0
);

-- Serves the conversation list: most recently updated first, keyset on (updated_at, id).
CREATE INDEX conversations_by_recency ON conversations (updated_at DESC, id DESC);

CREATE TABLE messages (
    id TEXT PRIMARY KEY NOT NULL,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Serves every message page (keyset on position) and the delete cascade.
CREATE UNIQUE INDEX messages_by_position ON messages (conversation_id, position);
