//! Logs of streamed replies, so a client can replay what it missed and follow the rest: in memory
//! when one replica serves everything, in Redis Streams when any replica may be asked.

mod memory;
mod redis_streams;

pub use memory::MemoryGenerationLog;
pub use redis_streams::RedisGenerationLog;
