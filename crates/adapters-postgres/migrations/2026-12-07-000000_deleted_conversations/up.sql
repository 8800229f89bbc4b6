-- The ids of deleted conversations, which are not used again: a create retried late under an id
-- its client chose, or a reply finishing after the deletion, must not land in a new conversation
-- of the same id. The default conversation (created again by the seed API) is never here.
CREATE TABLE deleted_conversations (
    id UUID PRIMARY KEY,
    deleted_at BIGINT NOT NULL
);
