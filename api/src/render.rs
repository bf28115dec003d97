//! Templates compiled once (per version) with `minijinja` and rendered per message:
//! HTML parts autoescaped, a variable the template needs but `templateData` lacks is an
//! error (semi-strict undefined: `{% if x %}` on a missing `x` is still allowed).
//!
//! The newest version of each template is cached in process for [`LATEST_TTL`] (and
//! dropped at once when this process changes the template, or, with Redis, when any
//! node announces a change); a pinned version is cached until the template is changed.
//! With Redis, a miss asks the shared cache before the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde_json::{Map, Value};

use crate::problem::{FieldError, pointer};
use crate::store::templates::{Definition, Parts, Template};
use crate::store::{AppStore, StoreError};
use crate::template_cache::{Lookup, SharedTemplates};

/// How long the newest version of a template is used before it is looked up again.
pub const LATEST_TTL: Duration = Duration::from_secs(10);

/// A message's rendered parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    /// The template's default sender.
    pub from: Option<String>,
    pub version: u32,
    /// The locale variant used (`None`: the default parts).
    pub locale: Option<String>,
}

/// A template version ready to render.
pub struct Compiled {
    env: Environment<'static>,
    definition: Definition,
    version: u32,
}

const PARTS: [&str; 3] = ["subject", "text", "html"];

fn template_name(locale: Option<&str>, part: &str) -> String {
    format!("{}/{part}", locale.unwrap_or_default())
}

impl Compiled {
    /// Compiles every part of every locale; syntax errors name the field (JSON Pointer
    /// into the template definition).
    pub fn new(definition: Definition, version: u32) -> Result<Self, Vec<FieldError>> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.set_auto_escape_callback(|name| {
            if name.ends_with("/html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        let mut errors = Vec::new();
        let default = Parts {
            subject: definition.subject.clone(),
            text: definition.text.clone(),
            html: definition.html.clone(),
        };
        let variants = std::iter::once((None, "".to_string(), &default)).chain(
            definition
                .locales
                .iter()
                .map(|(name, parts)| (Some(name.as_str()), pointer("/locales", name), parts)),
        );
        for (locale, base, parts) in variants {
            if parts.text.is_none() && parts.html.is_none() {
                errors.push(FieldError::new(
                    pointer(&base, "text"),
                    "required",
                    "a template needs a text or an html part",
                ));
            }
            for (part, source) in [
                ("subject", Some(&parts.subject)),
                ("text", parts.text.as_ref()),
                ("html", parts.html.as_ref()),
            ] {
                let Some(source) = source else { continue };
                if let Err(e) = env.add_template_owned(template_name(locale, part), source.clone())
                {
                    errors.push(FieldError::new(
                        pointer(&base, part),
                        "template-error",
                        format!("{e}"),
                    ));
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            env,
            definition,
            version,
        })
    }

    /// Renders the parts for `locale` with `data`; errors point into `data` (the
    /// request's `templateData`, at `data_pointer`).
    pub fn render(
        &self,
        locale: Option<&str>,
        data: &Map<String, Value>,
        data_pointer: &str,
    ) -> Result<Rendered, Vec<FieldError>> {
        let (chosen, _) = self.definition.parts(locale);
        let chosen = chosen.map(str::to_string);
        let context = minijinja::Value::from(minijinja::value::Serde(data));
        let mut out: [Option<String>; 3] = [None, None, None];
        let mut errors = Vec::new();
        for (slot, part) in out.iter_mut().zip(PARTS) {
            let Ok(template) = self
                .env
                .get_template(&template_name(chosen.as_deref(), part))
            else {
                continue;
            };
            match template.render(context.clone()) {
                Ok(text) => *slot = Some(text),
                Err(e) if e.kind() == ErrorKind::UndefinedError => {
                    let mut missing: Vec<String> = template
                        .undeclared_variables(false)
                        .into_iter()
                        .filter(|name| !data.contains_key(name))
                        .collect();
                    missing.sort();
                    if missing.is_empty() {
                        errors.push(FieldError::new(
                            data_pointer,
                            "missing-variable",
                            format!("the {part} template uses a value templateData lacks: {e}"),
                        ));
                    }
                    for name in missing {
                        let detail = format!("the {part} template uses {name}");
                        errors.push(FieldError::new(
                            pointer(data_pointer, &name),
                            "missing-variable",
                            detail,
                        ));
                    }
                }
                Err(e) => errors.push(FieldError::new(
                    data_pointer,
                    "template-error",
                    format!("the {part} template failed: {e}"),
                )),
            }
        }
        errors.dedup();
        let [subject, text, html] = out;
        let subject = subject.unwrap_or_default();
        if subject.contains(['\r', '\n']) {
            errors.push(FieldError::new(
                data_pointer,
                "header-injection",
                "the rendered subject has a line break",
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Rendered {
            subject,
            text,
            html,
            from: self.definition.from.clone(),
            version: self.version,
            locale: chosen,
        })
    }
}

/// (tenant, email type).
type Key = (String, String);
/// Pinned versions: (tenant, email type, version).
type Pinned = HashMap<(Key, u32), Arc<Compiled>>;

struct Latest {
    compiled: Arc<Compiled>,
    loaded: Instant,
}

/// Compiled templates by (tenant, email type).
#[derive(Clone)]
pub struct Templates {
    store: AppStore,
    shared: Option<SharedTemplates>,
    /// Bumped by every drop of (tenant, email type): a lookup that read the store
    /// before a drop does not cache what it read.
    generations: Arc<Mutex<HashMap<Key, u64>>>,
    /// Bumped when everything is dropped.
    epoch: Arc<std::sync::atomic::AtomicU64>,
    latest: Arc<Mutex<HashMap<Key, Latest>>>,
    pinned: Arc<Mutex<Pinned>>,
}

impl Templates {
    pub fn new(store: AppStore, shared: Option<SharedTemplates>) -> Self {
        Self {
            store,
            shared,
            generations: Arc::default(),
            epoch: Arc::default(),
            latest: Arc::default(),
            pinned: Arc::default(),
        }
    }

    pub fn store(&self) -> &AppStore {
        &self.store
    }

    /// The template to render: `version`, or the newest; `None` when there is none.
    pub async fn get(
        &self,
        tenant: &str,
        email_type: &str,
        version: Option<u32>,
    ) -> Result<Option<Arc<Compiled>>, StoreError> {
        let key = (tenant.to_string(), email_type.to_string());
        let cached = match version {
            Some(v) => lock(&self.pinned).get(&(key.clone(), v)).cloned(),
            None => lock(&self.latest)
                .get(&key)
                .filter(|l| l.loaded.elapsed() < LATEST_TTL)
                .map(|l| l.compiled.clone()),
        };
        if cached.is_some() {
            return Ok(cached);
        }
        let generation = self.generation(&key);
        let found = match (&self.shared, version) {
            (Some(shared), None) => match shared.get(tenant, email_type).await {
                Lookup::Hit(found) => found,
                Lookup::Miss => {
                    let found = self.store.template(tenant, email_type, None).await?;
                    shared.fill(tenant, email_type, found.as_ref()).await;
                    found
                }
                Lookup::Failed => self.store.template(tenant, email_type, None).await?,
            },
            _ => self.store.template(tenant, email_type, version).await?,
        };
        let Some(template) = found else {
            return Ok(None);
        };
        let compiled = Arc::new(compile_stored(template)?);
        if self.generation(&key) != generation {
            // Changed while we read: use what we read once, cache nothing.
            return Ok(Some(compiled));
        }
        match version {
            Some(v) => {
                lock(&self.pinned).insert((key, v), compiled.clone());
            }
            None => {
                let latest = Latest {
                    compiled: compiled.clone(),
                    loaded: Instant::now(),
                };
                lock(&self.latest).insert(key, latest);
            }
        }
        Ok(Some(compiled))
    }

    /// After this process changed (tenant, email type) in the store (`now`: the version
    /// it stored, `None`: it deleted the template): drops its cached copies here and,
    /// with Redis, in the shared cache and on every node.
    pub async fn changed(&self, tenant: &str, email_type: &str, now: Option<&Template>) {
        self.drop_local(tenant, email_type);
        let Some(shared) = &self.shared else { return };
        if let Err(e) = shared.announce(tenant, email_type, now).await {
            tracing::warn!(error = %e, %email_type, "cannot announce a template change to redis; will retry");
            if let Err(e) = self.store.add_announcement(tenant, email_type).await {
                tracing::error!(error = %e, %email_type, "cannot keep a template change to announce; other nodes may use the old version for up to 24 h");
            }
        }
    }

    /// Drops what this process has cached of (tenant, email type).
    pub fn drop_local(&self, tenant: &str, email_type: &str) {
        let key = (tenant.to_string(), email_type.to_string());
        *lock(&self.generations).entry(key.clone()).or_default() += 1;
        lock(&self.latest).remove(&key);
        lock(&self.pinned).retain(|(k, _), _| *k != key);
    }

    fn generation(&self, key: &Key) -> (u64, u64) {
        let epoch = self.epoch.load(std::sync::atomic::Ordering::SeqCst);
        (
            epoch,
            lock(&self.generations)
                .get(key)
                .copied()
                .unwrap_or_default(),
        )
    }

    fn drop_all_local(&self) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        lock(&self.latest).clear();
        lock(&self.pinned).clear();
    }

    /// Announces the changes Redis could not take before (with the templates' state
    /// now).
    pub async fn retry_announcements(&self) {
        let Some(shared) = &self.shared else { return };
        let pending = match self.store.announcements().await {
            Ok(pending) => pending,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the template changes to announce");
                return;
            }
        };
        for (tenant, email_type) in pending {
            let Ok(now) = self.store.template(&tenant, &email_type, None).await else {
                continue;
            };
            if shared
                .announce(&tenant, &email_type, now.as_ref())
                .await
                .is_ok()
                && self
                    .store
                    .remove_announcement(&tenant, &email_type)
                    .await
                    .is_ok()
            {
                tracing::info!(%email_type, "template change announced to redis");
            }
        }
    }

    /// With Redis, drops this process's copies of what other nodes change, until `stop`.
    pub async fn watch(&self, stop: tokio_util::sync::CancellationToken) {
        let Some(shared) = &self.shared else { return };
        shared
            .watch(
                |tenant, email_type| self.drop_local(tenant, email_type),
                || self.drop_all_local(),
                stop,
            )
            .await;
    }
}

fn compile_stored(template: Template) -> Result<Compiled, StoreError> {
    Compiled::new(template.definition, template.version).map_err(|errors| {
        let first = errors.first().map(|e| e.detail.clone()).unwrap_or_default();
        StoreError::Corrupt(format!(
            "stored template {} v{} does not compile: {first}",
            template.email_type, template.version
        ))
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    fn welcome() -> Definition {
        Definition {
            subject: "Welcome, {{ name }}!".into(),
            text: Some("Hello {{ name }}{% if plan %}, on {{ plan }}{% endif %}.".into()),
            html: Some("<p>Hello {{ name }}</p>".into()),
            from: Some("Team <team@example.com>".into()),
            locales: BTreeMap::from([(
                "fr".to_string(),
                Parts {
                    subject: "Bienvenue, {{ name }} !".into(),
                    text: Some("Bonjour {{ name }}.".into()),
                    html: None,
                },
            )]),
        }
    }

    fn data(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn renders_escaping_html_only_and_picking_the_locale() {
        let compiled = Compiled::new(welcome(), 3).unwrap();
        let out = compiled
            .render(None, &data(json!({"name": "<Ann>"})), "/templateData")
            .unwrap();
        assert_eq!(out.subject, "Welcome, <Ann>!");
        assert_eq!(out.text.as_deref(), Some("Hello <Ann>."));
        assert_eq!(out.html.as_deref(), Some("<p>Hello &lt;Ann&gt;</p>"));
        assert_eq!((out.version, out.locale), (3, None));

        let fr = compiled
            .render(
                Some("fr-CA"),
                &data(json!({"name": "Zoé"})),
                "/templateData",
            )
            .unwrap();
        assert_eq!(fr.subject, "Bienvenue, Zoé !");
        assert_eq!((fr.html, fr.locale.as_deref()), (None, Some("fr")));
        let unknown = compiled
            .render(Some("de"), &data(json!({"name": "Jo"})), "/templateData")
            .unwrap();
        assert_eq!(unknown.locale, None);
    }

    #[test]
    fn a_missing_variable_is_named() {
        let compiled = Compiled::new(welcome(), 1).unwrap();
        let errors = compiled
            .render(None, &data(json!({"plan": "pro"})), "/templateData")
            .unwrap_err();
        assert!(!errors.is_empty());
        assert!(
            errors
                .iter()
                .all(|e| e.pointer == "/templateData/name" && e.code == "missing-variable"),
            "{errors:?}"
        );
    }

    #[test]
    fn syntax_errors_and_subject_line_breaks_are_field_errors() {
        let mut bad = welcome();
        bad.html = Some("{% if %}".into());
        bad.locales.get_mut("fr").unwrap().subject = "{{ unclosed".into();
        let errors = Compiled::new(bad, 1).err().unwrap();
        let pointers: Vec<_> = errors.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(pointers, ["/html", "/locales/fr/subject"]);

        let compiled = Compiled::new(welcome(), 1).unwrap();
        let errors = compiled
            .render(
                None,
                &data(json!({"name": "x\r\nBcc: y@z"})),
                "/templateData",
            )
            .unwrap_err();
        assert_eq!(errors[0].code, "header-injection");
    }
}
