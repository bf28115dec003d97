//! `/v1/lists` and `/v1/campaigns`: recipient lists uploaded as a stream, campaigns
//! that send a template to a list, their progress and results, pause, resume, cancel.

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::body;
use crate::campaigns::rows::{Format, MAX_ROW_BYTES};
use crate::campaigns::spec::{CampaignRequest, Checked};
use crate::campaigns::upload::{self, BodyReader};
use crate::campaigns::{CampaignView, Results};
use crate::problem::{FieldError, Kind, Problem};
use crate::state::AppState;
use crate::store::campaigns::{CampaignRecord, state};
use crate::store::lists::RecipientList;

fn unavailable(e: impl std::fmt::Display) -> Problem {
    Problem::store_unavailable("the campaign store", e)
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

fn list_format(headers: &HeaderMap) -> Result<Format, Problem> {
    let media = body::media_type(headers);
    Format::of(&media).ok_or_else(|| {
        Problem::new(Kind::UnsupportedMediaType).detail(format!(
            "a list is text/csv or application/x-ndjson, not {media:?}"
        ))
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// A name for people (default: the list's id).
    pub name: Option<String>,
}

/// Stores a recipient list read from the body as it arrives (no size limit but
/// `http.max_list_rows`): CSV with a header row (`address` or `email`, optional
/// `userId`, every other column a template field) or NDJSON (`{"address", "userId",
/// "data"}` per line). Bad rows are counted and the first 100 listed with their lines;
/// duplicates (same address, any case) are kept once.
#[utoipa::path(
    post,
    path = "/v1/lists",
    tag = "campaigns",
    params(ListQuery),
    request_body(content = String, description = "The rows: text/csv or application/x-ndjson"),
    responses(
        (status = 201, description = "Stored (state ready), or stored up to where the upload broke off (state failed)", body = RecipientList),
        (status = 401, description = "Missing, unknown or revoked API key", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Neither CSV nor NDJSON", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn upload_list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<ListQuery>,
    headers: HeaderMap,
    request: Body,
) -> Result<Response, Problem> {
    let format = list_format(&headers)?;
    let id = new_id("lst");
    let name = query.name.unwrap_or_else(|| id.clone());
    let reader = upload::body_reader(request, state.config.request_timeout);
    let list = store_list(&state, &caller, &id, &name, format, reader, 1).await?;
    Ok((StatusCode::CREATED, axum::Json(list)).into_response())
}

async fn store_list(
    state: &AppState,
    caller: &Caller,
    id: &str,
    name: &str,
    format: Format,
    reader: BodyReader,
    first_line: u64,
) -> Result<RecipientList, Problem> {
    let store = &state.deps.store;
    store
        .create_list(id, caller.tenant_key(), name)
        .await
        .map_err(unavailable)?;
    let max_rows = state.config.max_list_rows;
    upload::receive(store, id, format, reader, first_line, max_rows)
        .await
        .map_err(unavailable)?;
    store
        .list(caller.tenant_key(), id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| Problem::internal(format!("list {id} vanished")))
}

/// A list of the caller's tenant, with its counts and first bad rows.
#[utoipa::path(
    get,
    path = "/v1/lists/{id}",
    tag = "campaigns",
    params(("id" = String, Path, description = "The list's id")),
    responses(
        (status = 200, description = "The list", body = RecipientList),
        (status = 401, description = "Missing, unknown or revoked API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such list", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let list = state
        .deps
        .store
        .list(caller.tenant_key(), &id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| Problem::new(Kind::NotFound).detail(format!("no list {id}")))?;
    Ok(axum::Json(list).into_response())
}

/// Creates a campaign: `application/json` naming a stored `list`, or
/// `application/x-ndjson` whose first line is the campaign and every further line a
/// recipient (stored as the campaign's list). It starts at `sendAt` (default now), in
/// batches of 1,000 recipients, skipping suppressed addresses.
#[utoipa::path(
    post,
    path = "/v1/campaigns",
    tag = "campaigns",
    request_body(content = CampaignRequest, description = "The campaign (JSON), or the campaign then its recipients (NDJSON)"),
    responses(
        (status = 201, description = "Created; it will start at sendAt", body = CampaignView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, unknown or revoked API key", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Unsupported content type", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, an unknown template, or a list not ready", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    request: Body,
) -> Result<Response, Problem> {
    let id = new_id("cmp");
    let inline = body::media_type(&headers) != "application/json";
    let (checked, list_id) = if inline {
        list_format(&headers)
            .ok()
            .filter(|f| *f == Format::Ndjson)
            .ok_or_else(|| {
                Problem::new(Kind::UnsupportedMediaType).detail(
                    "a campaign is application/json, or application/x-ndjson with its recipients",
                )
            })?;
        let mut reader = upload::body_reader(request, state.config.request_timeout);
        let line = upload::first_line(&mut reader, MAX_ROW_BYTES)
            .await
            .map_err(|e| {
                Problem::new(Kind::MalformedJson).detail(format!("cannot read the body: {e}"))
            })?
            .ok_or_else(|| {
                Problem::new(Kind::MalformedJson).detail(format!(
                    "the first line (the campaign) is missing or longer than {MAX_ROW_BYTES} bytes"
                ))
            })?;
        let value = body::json(&json_headers(), &line)?;
        let checked = check(&state, &caller, value).await?;
        if checked.list.is_some() {
            let error = FieldError::new(
                "/list",
                "invalid",
                "the recipients follow in the body: no list",
            );
            return Err(Problem::fields(vec![error]));
        }
        let name = checked.name.clone().unwrap_or_else(|| id.clone());
        let list_id = new_id("lst");
        store_list(&state, &caller, &list_id, &name, Format::Ndjson, reader, 2).await?;
        (checked, list_id)
    } else {
        let bytes = body::read(&state, &headers, request).await?;
        let value = body::json(&headers, &bytes)?;
        let checked = check(&state, &caller, value).await?;
        let Some(list_id) = checked.list.clone() else {
            let error = FieldError::new(
                "/list",
                "required",
                "name a stored list, or send the recipients as NDJSON",
            );
            return Err(Problem::fields(vec![error]));
        };
        let list = state
            .deps
            .store
            .list(caller.tenant_key(), &list_id)
            .await
            .map_err(unavailable)?;
        if list.as_ref().is_none_or(|l| l.state != "ready") {
            let detail = match list {
                None => format!("no list {list_id}"),
                Some(l) => format!("list {list_id} is {}, not ready", l.state),
            };
            return Err(Problem::fields(vec![FieldError::new(
                "/list", "invalid", detail,
            )]));
        }
        (checked, list_id)
    };
    let now = chrono::Utc::now().timestamp_millis().max(0) as u64;
    let record = CampaignRecord {
        id: id.clone(),
        tenant: caller.tenant_key().to_string(),
        name: checked.name.clone().unwrap_or_else(|| id.clone()),
        list_id,
        spec: serde_json::to_string(&checked.spec).map_err(Problem::internal)?,
        state: state::SCHEDULED.into(),
        send_at_ms: checked.send_at_ms.unwrap_or(now),
        done_seq: 0,
        expanded: 0,
        suppressed: 0,
        failed: 0,
        last_error: None,
        phase: 0,
        test_ends_at_ms: None,
        winner: None,
        created_at_ms: now,
        finished_at_ms: None,
    };
    state
        .deps
        .store
        .create_campaign(&record)
        .await
        .map_err(unavailable)?;
    state.campaign_wake.notify_one();
    tracing::info!(campaign = %id, list = %record.list_id, "campaign created");
    let view = view(&state, &record, false).await?;
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

fn json_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        "application/json".parse().expect("a header value"),
    );
    headers
}

/// Checks the campaign's fields and that its template exists.
async fn check(
    state: &AppState,
    caller: &Caller,
    value: serde_json::Value,
) -> Result<Checked, Problem> {
    let request: CampaignRequest = body::typed(value, "invalid-type")?;
    let checked = request
        .check(caller.tenant.as_deref())
        .map_err(Problem::fields)?;
    let spec = &checked.spec;
    let t = spec.tracking;
    if (t.opens || t.clicks || t.unsubscribe) && state.deps.tracking.is_none() {
        let error = FieldError::new(
            "/tracking",
            "tracking-off",
            "this server tracks nothing: tracking.base_url is not set",
        );
        return Err(Problem::fields(vec![error]));
    }
    let template = state
        .templates
        .get(caller.tenant_key(), &spec.email_type, spec.template_version)
        .await
        .map_err(|e| Problem::store_unavailable("the template store", e))?;
    if template.is_none() {
        let error = FieldError::new(
            "/emailType",
            "unknown-template",
            format!("no template for email type {}", spec.email_type),
        );
        return Err(Problem::fields(vec![error]));
    }
    Ok(checked)
}

async fn view(
    state: &AppState,
    c: &CampaignRecord,
    with_results: bool,
) -> Result<CampaignView, Problem> {
    let results = match (&state.deps.history, with_results) {
        (Some(history), true) => {
            let counts = history
                .campaign_statuses(&c.id)
                .await
                .map_err(|e| Problem::store_unavailable("the history", e))?;
            Some(Results::of(&counts))
        }
        _ => None,
    };
    CampaignView::load(&state.deps.store, c, results)
        .await
        .map_err(unavailable)
}

async fn own(state: &AppState, caller: &Caller, id: &str) -> Result<CampaignRecord, Problem> {
    state
        .deps
        .store
        .campaign(Some(caller.tenant_key()), id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| Problem::new(Kind::NotFound).detail(format!("no campaign {id}")))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CampaignsQuery {
    /// How many, newest first (default 50, at most 500).
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignList {
    pub campaigns: Vec<CampaignView>,
}

/// The tenant's campaigns, newest first, with their expansion (results: ask for one).
#[utoipa::path(
    get,
    path = "/v1/campaigns",
    tag = "campaigns",
    params(CampaignsQuery),
    responses(
        (status = 200, description = "The campaigns", body = CampaignList),
        (status = 401, description = "Missing, unknown or revoked API key", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<CampaignsQuery>,
) -> Result<Response, Problem> {
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    let records = state
        .deps
        .store
        .campaigns(Some(caller.tenant_key()), limit)
        .await
        .map_err(unavailable)?;
    let mut campaigns = Vec::with_capacity(records.len());
    for c in &records {
        campaigns.push(view(&state, c, false).await?);
    }
    Ok(axum::Json(CampaignList { campaigns }).into_response())
}

/// A campaign's progress and results: its list's counts, how much is queued, and
/// what became of the queued mail (from the history), with rates.
#[utoipa::path(
    get,
    path = "/v1/campaigns/{id}",
    tag = "campaigns",
    params(("id" = String, Path, description = "The campaign's id")),
    responses(
        (status = 200, description = "The campaign", body = CampaignView),
        (status = 401, description = "Missing, unknown or revoked API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such campaign", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let c = own(&state, &caller, &id).await?;
    Ok(axum::Json(view(&state, &c, true).await?).into_response())
}

/// Pauses (nothing more is queued, and the relay holds what is queued), resumes or
/// cancels a campaign (for good: what is queued and not yet sent is dropped, each
/// recipient `suppressed` with reason `campaign-cancelled`).
#[utoipa::path(
    post,
    path = "/v1/campaigns/{id}/{action}",
    tag = "campaigns",
    params(
        ("id" = String, Path, description = "The campaign's id"),
        ("action" = String, Path, description = "pause, resume or cancel"),
    ),
    responses(
        (status = 200, description = "Done: the campaign as it is now", body = CampaignView),
        (status = 401, description = "Missing, unknown or revoked API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such campaign or action", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not possible in its state (a cancelled campaign; resume of one not paused)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn act(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let (from, to) = state::transition(&action).ok_or_else(|| {
        Problem::new(Kind::NotFound).detail(format!("no action {action:?} (pause, resume, cancel)"))
    })?;
    let c = own(&state, &caller, &id).await?;
    let changed = state
        .deps
        .store
        .set_campaign_state(Some(caller.tenant_key()), &id, from, to)
        .await
        .map_err(unavailable)?;
    if !changed {
        return Err(Problem::new(Kind::WrongState)
            .detail(format!("campaign {id} is {}: cannot {action} it", c.state)));
    }
    if to == state::SCHEDULED {
        state.campaign_wake.notify_one();
    }
    tracing::info!(campaign = %id, %action, "campaign {to}");
    let c = own(&state, &caller, &id).await?;
    Ok(axum::Json(view(&state, &c, true).await?).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct VariantsQuery {
    /// What the variants are compared on: `opened` (default) or `clicked`, each per
    /// delivered recipient and by people only.
    pub metric: Option<String>,
}

/// A campaign's variants side by side.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VariantReport {
    pub metric: String,
    /// In the campaign's order.
    pub variants: Vec<VariantResult>,
    /// The variant with the highest rate, against the runner-up; absent without two
    /// variants that delivered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<Leader>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VariantResult {
    pub name: String,
    pub weight: u32,
    /// The metric's rate: opened (or clicked) per delivered.
    pub rate: f64,
    pub results: Results,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Leader {
    pub name: String,
    pub runner_up: String,
    /// The two-sided p-value of their difference (two-proportion z-test).
    pub p_value: f64,
    /// `p_value` below 0.05.
    pub significant: bool,
    /// In words: `"b leads a (p = 0.003): significant at 95%"` or `"not yet
    /// significant (p = 0.41)"`.
    pub verdict: String,
}

/// The variants of a campaign, each with its results and rate, and whether the best
/// one's lead over the runner-up is significant.
#[utoipa::path(
    get,
    path = "/v1/campaigns/{id}/variants",
    tag = "campaigns",
    params(("id" = String, Path, description = "The campaign's id"), VariantsQuery),
    responses(
        (status = 200, description = "The variants compared", body = VariantReport),
        (status = 401, description = "Missing, unknown or revoked API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such campaign, or it has no variants", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown metric", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn variants(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(query): Query<VariantsQuery>,
) -> Result<Response, Problem> {
    let metric = query.metric.unwrap_or_else(|| "opened".into());
    if metric != "opened" && metric != "clicked" {
        let error = FieldError::new("metric", "invalid", "opened or clicked");
        return Err(Problem::fields(vec![error]));
    }
    let c = own(&state, &caller, &id).await?;
    let spec: crate::campaigns::spec::Spec = serde_json::from_str(&c.spec)
        .map_err(|e| Problem::internal(format!("campaign {id} spec: {e}")))?;
    if spec.variants.is_empty() {
        return Err(Problem::new(Kind::NotFound).detail(format!("campaign {id} has no variants")));
    }
    let history = state
        .deps
        .history
        .as_ref()
        .ok_or_else(|| Problem::new(Kind::NotFound).detail("this server reads no history"))?;
    let counts = history
        .campaign_statuses(&c.id)
        .await
        .map_err(|e| Problem::store_unavailable("the history", e))?;
    let hits = |r: &Results| {
        if metric == "clicked" {
            r.clicked
        } else {
            r.opened
        }
    };
    let variants: Vec<VariantResult> = spec
        .variants
        .iter()
        .map(|v| {
            let mine = counts
                .iter()
                .filter(|c| c.variant.as_deref() == Some(v.name.as_str()));
            let results = Results::of(mine);
            let rate = if metric == "clicked" {
                results.rates.clicked
            } else {
                results.rates.opened
            };
            VariantResult {
                name: v.name.clone(),
                weight: v.weight,
                rate,
                results,
            }
        })
        .collect();
    let mut ranked: Vec<&VariantResult> = variants
        .iter()
        .filter(|v| v.results.delivered > 0)
        .collect();
    ranked.sort_by(|a, b| b.rate.total_cmp(&a.rate));
    let leader = match ranked.as_slice() {
        [best, second, ..] => crate::campaigns::variants::compare(
            hits(&best.results),
            best.results.delivered,
            hits(&second.results),
            second.results.delivered,
        )
        .map(|c| Leader {
            name: best.name.clone(),
            runner_up: second.name.clone(),
            p_value: c.p_value,
            significant: c.significant,
            verdict: if c.significant {
                format!(
                    "{} leads {} (p = {:.3}): significant at 95%",
                    best.name, second.name, c.p_value
                )
            } else {
                format!("not yet significant (p = {:.2})", c.p_value)
            },
        }),
        _ => None,
    };
    Ok(axum::Json(VariantReport {
        metric,
        variants,
        leader,
    })
    .into_response())
}
