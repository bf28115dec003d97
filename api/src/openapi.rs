//! The OpenAPI 3.1 document served at `/v1/openapi.json`, generated from the handlers
//! and the types they read and answer (so it cannot drift from them).

use std::borrow::Cow;

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{AllOfBuilder, OneOfBuilder, Ref, Schema};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use crate::alerts::{AlertCondition, AlertReport, AlertSeverity, AlertState, AlertView};
use crate::history::{EventView, HistoryPage, MessageHistory, RecipientView, ReplyView};
use crate::problem::{FieldError, Problem};
use crate::routes::{
    alerts, campaigns, history, intake, messages, suppressions, templates, tracking, users,
    webhooks,
};
use crate::store::templates::{Definition, Parts, Template};
use crate::submit::forms::{
    Addresses, Attachment, ExplicitForm, MetaFields, RawForm, TemplateForm, TrackingOptions,
};

/// A message in one of the three JSON forms, each with the metadata fields: told apart
/// by `raw` (raw form), `recipient`/`templateData` (template form), else explicit.
pub struct MessageRequest;

impl PartialSchema for MessageRequest {
    fn schema() -> RefOr<Schema> {
        let with_meta = |form: &str| {
            let all = AllOfBuilder::new()
                .item(Ref::from_schema_name(MetaFields::name()))
                .item(Ref::from_schema_name(form))
                .build();
            RefOr::T(Schema::AllOf(all))
        };
        OneOfBuilder::new()
            .item(with_meta(&TemplateForm::name()))
            .item(with_meta(&ExplicitForm::name()))
            .item(with_meta(&RawForm::name()))
            .into()
    }
}

impl ToSchema for MessageRequest {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("MessageRequest")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        for (name, schema) in [
            (MetaFields::name(), MetaFields::schema()),
            (TemplateForm::name(), TemplateForm::schema()),
            (ExplicitForm::name(), ExplicitForm::schema()),
            (RawForm::name(), RawForm::schema()),
            (Addresses::name(), Addresses::schema()),
            (Attachment::name(), Attachment::schema()),
            (TrackingOptions::name(), TrackingOptions::schema()),
        ] {
            schemas.push((name.into_owned(), schema));
        }
    }
}

struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Postroad HTTP API",
        description = "Submit mail (single, batch, template, raw MIME), manage templates and the suppression list, read the delivery history and the alerts; the open, click and one-click unsubscribe links of tracked mail. Errors are RFC 9457 problem documents."
    ),
    paths(
        messages::send,
        messages::batch,
        templates::list,
        templates::get,
        templates::put,
        templates::delete,
        users::put,
        users::get,
        users::delete,
        history::list,
        history::message,
        alerts::list,
        suppressions::list,
        suppressions::get,
        suppressions::add,
        suppressions::delete,
        webhooks::list,
        webhooks::register,
        webhooks::get,
        webhooks::delete,
        webhooks::dead_letters,
        webhooks::redrive,
        intake::inbound,
        intake::ses,
        intake::sendgrid,
        tracking::open,
        tracking::click,
        tracking::unsubscribe,
        tracking::unsubscribe_page,
        campaigns::upload_list,
        campaigns::get_list,
        campaigns::create,
        campaigns::list,
        campaigns::get,
        campaigns::act,
        campaigns::variants,
    ),
    components(schemas(
        MessageRequest,
        messages::Accepted,
        messages::BatchRequest,
        messages::BatchResult,
        messages::ItemResult,
        messages::SuppressedRecipient,
        suppressions::SuppressionView,
        suppressions::SuppressionPage,
        suppressions::NewSuppression,
        suppressions::AddRequest,
        suppressions::Added,
        webhooks::EndpointView,
        webhooks::Registered,
        webhooks::EndpointList,
        webhooks::Registration,
        webhooks::DeadLetterView,
        webhooks::DeadLetterPage,
        webhooks::Redriven,
        Definition,
        Parts,
        Template,
        templates::TemplateList,
        users::PreferencesSchema,
        HistoryPage,
        MessageHistory,
        RecipientView,
        EventView,
        ReplyView,
        AlertReport,
        AlertView,
        AlertSeverity,
        AlertState,
        AlertCondition,
        Problem,
        FieldError,
        intake::Recorded,
        crate::campaigns::spec::CampaignRequest,
        crate::campaigns::CampaignView,
        crate::campaigns::ListSummary,
        crate::campaigns::Expansion,
        crate::campaigns::Results,
        crate::campaigns::Rates,
        crate::store::lists::RecipientList,
        crate::store::lists::RowError,
        campaigns::CampaignList,
        campaigns::VariantReport,
        campaigns::VariantResult,
        campaigns::Leader,
        crate::campaigns::variants::Variant,
        crate::campaigns::spec::TestPhase,
        crate::campaigns::TestView,
    )),
    modifiers(&BearerKeys),
    tags(
        (name = "messages", description = "Submission: a 202 means the message is durable in the queue"),
        (name = "templates", description = "Versioned templates per email type"),
        (name = "history", description = "Delivery history: each recipient's status and the events behind it"),
        (name = "alerts", description = "Alert rules evaluated over a sliding window of events: what fires and since when"),
        (name = "suppressions", description = "The suppression list of the key's tenant: addresses mail is not sent to (hard bounces, complaints, unsubscribes, by hand)"),
        (name = "campaigns", description = "Recipient lists read as a stream (CSV or NDJSON; bad rows reported by line, duplicates dropped) and campaigns that send a template to a list in batches, skipping suppressed addresses; progress, results with rates, pause, resume, cancel"),
        (name = "users", description = "User preferences that template-form messages render with"),
        (name = "webhooks", description = "The tenant's webhook endpoints: its events POSTed in signed batches (Postroad-Signature), in order, retried, then dead-lettered. Also the provider event webhooks (SES through SNS, SendGrid): authenticated by their signatures, recorded durably as events before the 200"),
    )
)]
pub struct ApiDoc;

/// The document, as served.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
