// The tables of the migrations folder, as diesel sees them.

diesel::table! {
    conversations (id) {
        id -> Uuid,
        title -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
        last_position -> BigInt,
    }
}

diesel::table! {
    messages (id) {
        id -> Uuid,
        conversation_id -> Uuid,
        position -> BigInt,
        role -> Text,
        content -> Text,
        created_at -> BigInt,
    }
}

diesel::joinable!(messages -> conversations (conversation_id));
diesel::allow_tables_to_appear_in_same_query!(conversations, messages);
