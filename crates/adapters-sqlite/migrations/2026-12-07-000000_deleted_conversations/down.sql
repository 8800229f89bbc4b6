DROP TABLE deleted_conversations;
