-- Timestamps are microseconds since the Unix epoch (domain `Timestamp`), kept exactly as integers.
CREATE TABLE conversations (
    id UUID PRIMARY KEY,
    title TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    -- Position of the newest message. Bumping it row-locks the conversation, which serialises the
    -- writers of one conversation across every replica and keeps positions gap-free.
    last_position BIGINT NOT NULL DEFAULT 0
);

-- Serves list_conversations: keyset pagination on (updated_at, id) descending.
CREATE INDEX conversations_updated_at_id_idx ON conversations (updated_at DESC, id DESC);

CREATE TABLE messages (
    id UUID PRIMARY KEY,
    conversation_id UUID NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- Also the index behind list_messages (keyset on position) and the cascading delete.
    UNIQUE (conversation_id, position)
);
