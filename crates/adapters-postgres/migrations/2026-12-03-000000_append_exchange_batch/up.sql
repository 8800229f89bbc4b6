-- A batch of appended exchanges in one round trip (crates/adapters-postgres/src/batches.rs).
-- Claims the positions of each conversation in the order given (the caller sorts them by id, so
-- batches never wait for each other in a cycle), then inserts every message at its conversation's
-- base position plus its offset. Returns each conversation's base (its last position before the
-- claim), or NULL when it does not exist; nothing is inserted for it then. Any error (a message id
-- already taken) undoes the whole call.
CREATE FUNCTION append_exchange_batch(
    conversation_ids UUID[],
    claimed BIGINT[],
    newest BIGINT[],
    message_ids UUID[],
    message_conversation_ids UUID[],
    message_offsets BIGINT[],
    roles TEXT[],
    contents TEXT[],
    created_ats BIGINT[]
) RETURNS BIGINT[] LANGUAGE plpgsql AS $$
DECLARE
    bases BIGINT[] := '{}';
    claimed_last BIGINT;
BEGIN
    FOR i IN 1 .. coalesce(array_length(conversation_ids, 1), 0) LOOP
        UPDATE conversations
        SET last_position = last_position + claimed[i],
            updated_at = GREATEST(updated_at, newest[i])
        WHERE id = conversation_ids[i]
        RETURNING last_position INTO claimed_last;
        bases := bases || (claimed_last - claimed[i]);
    END LOOP;
    INSERT INTO messages (id, conversation_id, position, role, content, created_at)
    SELECT m.id, m.conversation_id, b.base + m.position_offset, m.role, m.content, m.created_at
    FROM unnest(message_ids, message_conversation_ids, message_offsets, roles, contents, created_ats)
        AS m (id, conversation_id, position_offset, role, content, created_at)
    JOIN unnest(conversation_ids, bases) AS b (conversation_id, base)
        ON b.conversation_id = m.conversation_id
    WHERE b.base IS NOT NULL;
    RETURN bases;
END
$$;
