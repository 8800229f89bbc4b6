DROP FUNCTION append_exchange_batch(UUID[], BIGINT[], BIGINT[], UUID[], UUID[], BIGINT[], TEXT[], TEXT[], BIGINT[]);
