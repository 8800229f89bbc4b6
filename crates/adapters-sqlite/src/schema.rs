//! The tables as diesel's query builder sees them, for the statements on the hot write path:
//! built queries are prepared once per connection and cached, raw SQL is parsed every time.

diesel::table! {
    conversations (id) {
        id -> Text,
        title -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
        last_position -> BigInt,
    }
}

diesel::table! {
    messages (id) {
        id -> Text,
        conversation_id -> Text,
        position -> BigInt,
        role -> Text,
        content -> Text,
        created_at -> BigInt,
    }
}

diesel::define_sql_function! {
    /// SQLite's two-argument scalar `max`.
    #[sql_name = "max"]
    fn later(a: diesel::sql_types::BigInt, b: diesel::sql_types::BigInt) -> diesel::sql_types::BigInt;
}
