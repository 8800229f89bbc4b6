use utoipa::openapi::path::Operation;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::dto;
use crate::errors::is_seed_path;
use crate::rate_limit::is_limited_path;
use crate::{ops, seed, v1};

/// The OpenAPI 3.1 document, generated from the handlers and DTOs themselves.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Chat service API",
        description = "Self-hostable AI chat. The `seed` routes keep the original app's contract; `/api/v1` is the product API."
    ),
    paths(
        seed::history,
        seed::send_message,
        v1::create_conversation,
        v1::list_conversations,
        v1::get_conversation,
        v1::rename_conversation,
        v1::delete_conversation,
        v1::list_messages,
        v1::send_message,
        v1::resume_stream,
        v1::stop_reply,
        v1::limits,
        ops::healthz,
        ops::readyz,
        ops::metrics,
    ),
    components(schemas(
        dto::SeedSendRequest,
        dto::SeedSendResponse,
        dto::SeedHistoryEntry,
        dto::SeedHistoryError,
        dto::SeedErrorResponse,
        dto::ErrorResponse,
        dto::ConversationDto,
        dto::MessageDto,
        dto::RoleDto,
        dto::ConversationPage,
        dto::MessagePage,
        dto::ExchangeDto,
        dto::CreateConversationRequest,
        dto::RenameConversationRequest,
        dto::SendMessageRequest,
        dto::DeltaEvent,
        dto::StreamStartEvent,
        dto::StreamErrorEvent,
        dto::StopResponse,
        dto::LimitsResponse,
        dto::HealthResponse,
    )),
    modifiers(&RefusalsBeforeTheRoutes),
    tags(
        (name = "seed", description = "The original app's API, unchanged"),
        (name = "conversations", description = "Conversations"),
        (name = "messages", description = "Messages and replies"),
        (name = "operations", description = "Health, readiness, metrics"),
    )
)]
pub struct ApiDoc;

/// The refusals every route may give before its handler runs, added to each operation rather
/// than repeated on each handler: a head over `limits.max_header_bytes` (431), a `Host` this
/// server does not answer for (421) and, on the seed and product routes, a client over its rate
/// (429). Each in the error shape of its route.
struct RefusalsBeforeTheRoutes;

impl Modify for RefusalsBeforeTheRoutes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in &mut openapi.paths.paths {
            let schema = if is_seed_path(path) {
                "SeedErrorResponse"
            } else {
                "ErrorResponse"
            };
            let mut refusals = vec![
                (
                    "421",
                    "`unknown_host`: a host not in `security.allowed_hosts`",
                ),
                (
                    "431",
                    "`headers_too_large`: target and headers over `limits.max_header_bytes`",
                ),
            ];
            if is_limited_path(path) {
                refusals.push((
                    "429",
                    "`rate_limited`: over the client's rate; see Retry-After",
                ));
            }
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.delete,
                &mut item.put,
            ];
            for operation in operations.into_iter().flatten() {
                add_refusals(operation, schema, &refusals);
            }
        }
    }
}

fn add_refusals(operation: &mut Operation, schema: &str, refusals: &[(&str, &str)]) {
    for (status, description) in refusals {
        let refusal = ResponseBuilder::new()
            .description(*description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(schema)))
                    .build(),
            )
            .build();
        let responses = &mut operation.responses.responses;
        // A route's own answer with this status (a stream limit's 429) says both.
        if let Some(RefOr::T(own)) = responses.get_mut(*status) {
            own.description = format!("{}; or {description}", own.description);
        } else {
            responses
                .entry((*status).to_owned())
                .or_insert(RefOr::T(refusal));
        }
    }
}
