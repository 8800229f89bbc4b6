//! Position claims shared by the appends of one batch.
//!
//! Every exchange takes the next two positions of its conversation and moves the conversation's
//! `updated_at`. Doing that with one `UPDATE` per exchange rewrites the conversation row and its
//! recency index entry once per exchange; a batch instead reads each conversation's last position
//! once, hands positions out in memory and writes each conversation row back once, before any
//! other kind of write runs and before the batch commits.

use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;

use crate::schema::{conversations, SettleConversation};

/// The conversations a batch has appended to and not yet written back.
#[derive(Debug, Default)]
pub(crate) struct PositionClaims {
    // A batch touches few conversations; a short scan beats hashing their ids.
    claims: Vec<Claim>,
}

#[derive(Debug)]
struct Claim {
    conversation_id: String,
    last_position: i64,
    updated_at: i64,
}

impl PositionClaims {
    /// Claims the next two positions of the conversation and returns the second; `NotFound`
    /// when the conversation does not exist.
    pub(crate) fn claim_exchange(
        &mut self,
        conn: &mut SqliteConnection,
        conversation_id: &str,
        updated_at: i64,
    ) -> QueryResult<i64> {
        let index = match self
            .claims
            .iter()
            .position(|claim| claim.conversation_id == conversation_id)
        {
            Some(index) => index,
            None => {
                let last_position = conversations::table
                    .find(conversation_id)
                    .select(conversations::last_position)
                    .get_result::<i64>(conn)?;
                self.claims.push(Claim {
                    conversation_id: conversation_id.to_owned(),
                    last_position,
                    updated_at,
                });
                self.claims.len() - 1
            }
        };
        let claim = &mut self.claims[index];
        claim.last_position += 2;
        claim.updated_at = claim.updated_at.max(updated_at);
        Ok(claim.last_position)
    }

    /// Writes every claim back to its conversation row and forgets it.
    pub(crate) fn settle(&mut self, conn: &mut SqliteConnection) -> QueryResult<()> {
        for claim in self.claims.drain(..) {
            SettleConversation {
                conversation_id: &claim.conversation_id,
                last_position: claim.last_position,
                updated_at: claim.updated_at,
            }
            .execute(conn)?;
        }
        Ok(())
    }

    /// Drops the claims without writing them: their transaction or savepoint was rolled back.
    pub(crate) fn forget(&mut self) {
        self.claims.clear();
    }
}
