//! The suites checked against themselves: a straightforward in-memory repository and a canned
//! assistant must pass, and repositories with a planted defect must fail the contract they break.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use domain::{
    Assistant, AssistantError, ChatRepository, Conversation, ConversationCursor, ConversationId,
    ConversationTitle, DeltaStream, Exchange, Message, MessageCursor, MessageWindow, NewExchange,
    NewMessage, Page, PageLimit, ReplyContext, RepositoryError, Role, Timestamp,
};
use futures::StreamExt;

#[derive(Debug, Clone, Copy, Default)]
enum Defect {
    #[default]
    None,
    /// Forgets that a full last page has nothing after it.
    CursorOnFullLastPage,
    /// Stores the user message even when the reply's id conflicts.
    HalfExchangeOnConflict,
    /// Lets a deleted conversation's id be used again.
    ForgetsDeletedIds,
}

type Store = HashMap<ConversationId, (Conversation, Vec<Message>)>;

#[derive(Debug, Default)]
struct MemoryRepository {
    defect: Defect,
    state: Mutex<Store>,
    deleted_ids: Mutex<HashSet<ConversationId>>,
}

fn message(exchange: &NewExchange, new: &NewMessage, role: Role, position: i64) -> Message {
    Message {
        id: new.id,
        conversation_id: exchange.conversation_id,
        position,
        role,
        content: new.content.clone(),
        created_at: new.created_at,
    }
}

#[async_trait]
impl ChatRepository for MemoryRepository {
    async fn create_conversation(
        &self,
        conversation: &Conversation,
    ) -> Result<(), RepositoryError> {
        let mut state = self.state.lock().unwrap();
        if state.contains_key(&conversation.id)
            || self.deleted_ids.lock().unwrap().contains(&conversation.id)
        {
            return Err(RepositoryError::Conflict);
        }
        state.insert(conversation.id, (conversation.clone(), Vec::new()));
        Ok(())
    }

    async fn get_conversation(&self, id: ConversationId) -> Result<Conversation, RepositoryError> {
        let state = self.state.lock().unwrap();
        state
            .get(&id)
            .map(|(c, _)| c.clone())
            .ok_or(RepositoryError::NotFound)
    }

    async fn list_conversations(
        &self,
        after: Option<ConversationCursor>,
        limit: PageLimit,
    ) -> Result<Page<Conversation, ConversationCursor>, RepositoryError> {
        let state = self.state.lock().unwrap();
        let mut all: Vec<Conversation> = state.values().map(|(c, _)| c.clone()).collect();
        all.sort_by_key(|c| std::cmp::Reverse((c.updated_at, c.id)));
        let rest: Vec<Conversation> = all
            .into_iter()
            .filter(|c| after.is_none_or(|a| (c.updated_at, c.id) < (a.updated_at, a.id)))
            .collect();
        let wanted = limit.get() as usize;
        let more = rest.len() > wanted;
        let items: Vec<Conversation> = rest.into_iter().take(wanted).collect();
        let next_cursor = items.last().filter(|_| more).map(|c| ConversationCursor {
            updated_at: c.updated_at,
            id: c.id,
        });
        Ok(Page { items, next_cursor })
    }

    async fn rename_conversation(
        &self,
        id: ConversationId,
        title: &ConversationTitle,
        now: Timestamp,
    ) -> Result<Conversation, RepositoryError> {
        let mut state = self.state.lock().unwrap();
        let (conversation, _) = state.get_mut(&id).ok_or(RepositoryError::NotFound)?;
        conversation.title = title.as_str().to_owned();
        conversation.updated_at = conversation.updated_at.max(now);
        Ok(conversation.clone())
    }

    async fn delete_conversation(&self, id: ConversationId) -> Result<(), RepositoryError> {
        let mut state = self.state.lock().unwrap();
        state.remove(&id).ok_or(RepositoryError::NotFound)?;
        if id != ConversationId::DEFAULT && !matches!(self.defect, Defect::ForgetsDeletedIds) {
            self.deleted_ids.lock().unwrap().insert(id);
        }
        Ok(())
    }

    async fn list_messages(
        &self,
        conversation_id: ConversationId,
        window: MessageWindow,
        limit: PageLimit,
    ) -> Result<Page<Message, MessageCursor>, RepositoryError> {
        let state = self.state.lock().unwrap();
        let (_, messages) = state
            .get(&conversation_id)
            .ok_or(RepositoryError::NotFound)?;
        let wanted = limit.get() as usize;
        let (items, more, backwards) = match window {
            MessageWindow::Latest | MessageWindow::Before(_) => {
                let bound = match window {
                    MessageWindow::Before(cursor) => cursor.position,
                    _ => i64::MAX,
                };
                let older: Vec<Message> = messages
                    .iter()
                    .filter(|m| m.position < bound)
                    .cloned()
                    .collect();
                let start = older.len().saturating_sub(wanted);
                (older[start..].to_vec(), start > 0, true)
            }
            MessageWindow::After(cursor) => {
                let newer: Vec<Message> = messages
                    .iter()
                    .filter(|m| m.position > cursor.position)
                    .cloned()
                    .collect();
                let more = newer.len() > wanted;
                (newer.into_iter().take(wanted).collect(), more, false)
            }
        };
        let more = match self.defect {
            Defect::CursorOnFullLastPage => more || items.len() == wanted,
            _ => more,
        };
        let edge = if backwards {
            items.first()
        } else {
            items.last()
        };
        let next_cursor = edge.filter(|_| more).map(|m| MessageCursor {
            position: m.position,
        });
        Ok(Page { items, next_cursor })
    }

    async fn append_exchange(&self, exchange: &NewExchange) -> Result<Exchange, RepositoryError> {
        let mut state = self.state.lock().unwrap();
        let taken = |store: &Store, id| {
            store
                .values()
                .any(|(_, messages)| messages.iter().any(|m| m.id == id))
        };
        let user_taken = taken(&state, exchange.user.id);
        let reply_taken =
            taken(&state, exchange.assistant.id) || exchange.user.id == exchange.assistant.id;
        let (conversation, messages) = state
            .get_mut(&exchange.conversation_id)
            .ok_or(RepositoryError::NotFound)?;
        let position = i64::try_from(messages.len()).unwrap() + 1;
        let user = message(exchange, &exchange.user, Role::User, position);
        if user_taken {
            return Err(RepositoryError::Conflict);
        }
        if reply_taken {
            if let Defect::HalfExchangeOnConflict = self.defect {
                messages.push(user);
            }
            return Err(RepositoryError::Conflict);
        }
        let assistant = message(exchange, &exchange.assistant, Role::Assistant, position + 1);
        messages.push(user.clone());
        messages.push(assistant.clone());
        conversation.updated_at = conversation.updated_at.max(exchange.assistant.created_at);
        Ok(Exchange {
            user_message: user,
            assistant_message: assistant,
        })
    }

    /// Never full: nothing to wait for.
    async fn append_exchange_waiting_for_room(
        &self,
        exchange: &NewExchange,
    ) -> Result<Exchange, RepositoryError> {
        self.append_exchange(exchange).await
    }

    async fn health_check(&self) -> Result<(), RepositoryError> {
        Ok(())
    }
}

#[derive(Debug)]
struct EchoAssistant;

#[async_trait]
impl Assistant for EchoAssistant {
    fn context_messages(&self) -> usize {
        4
    }

    async fn reply(&self, context: &ReplyContext) -> Result<String, AssistantError> {
        Ok(format!("You said: {}", context.user_text.as_str()))
    }

    async fn reply_stream(&self, context: &ReplyContext) -> Result<DeltaStream, AssistantError> {
        let reply = self.reply(context).await?;
        let pieces: Vec<Result<String, AssistantError>> = reply
            .split_inclusive(' ')
            .map(|piece| Ok(piece.to_owned()))
            .collect();
        Ok(futures::stream::iter(pieces).boxed())
    }
}

mod memory {
    use super::*;

    testkit::chat_repository_conformance!(async { Arc::new(MemoryRepository::default()) });
}

mod as_dyn_with_guard {
    use super::*;

    testkit::chat_repository_conformance!(async {
        Some((
            Arc::new(MemoryRepository::default()) as Arc<dyn ChatRepository>,
            "a guard",
        ))
    });
}

mod echo {
    use super::*;

    testkit::assistant_conformance!(async { Arc::new(EchoAssistant) });
}

/// Runs one contract against a repository with `defect` and reports whether the contract failed.
async fn fails<F, Fut>(defect: Defect, check: F) -> bool
where
    F: FnOnce(Arc<MemoryRepository>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let repository = Arc::new(MemoryRepository {
        defect,
        ..MemoryRepository::default()
    });
    tokio::spawn(check(repository)).await.is_err()
}

#[tokio::test]
async fn planted_defects_fail_the_contract_they_break() {
    use testkit::repository::*;
    assert!(!fails(Defect::None, list_messages_before_window).await);
    assert!(fails(Defect::CursorOnFullLastPage, list_messages_before_window).await);
    assert!(fails(Defect::CursorOnFullLastPage, list_messages_after_window).await);
    assert!(
        fails(
            Defect::CursorOnFullLastPage,
            list_messages_pages_cover_every_message_once
        )
        .await
    );
    assert!(
        fails(
            Defect::HalfExchangeOnConflict,
            append_with_duplicate_message_id_conflicts_and_stores_nothing
        )
        .await
    );
    assert!(!fails(Defect::None, a_deleted_conversations_id_is_not_used_again).await);
    assert!(
        fails(
            Defect::ForgetsDeletedIds,
            a_deleted_conversations_id_is_not_used_again
        )
        .await
    );
}
