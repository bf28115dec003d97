//! Postroad's delivery engine.
//!
//! [`Relay`] claims ready messages from the queue, groups recipients by destination
//! site ([`route`]: smarthost, static routes, or MX with implicit and null MX; domains
//! sharing MX hosts share a site), and keeps a pool of reusable SMTP connections per
//! site ([`site`]) speaking through [`client`], within the limits the shaping file sets
//! per site, provider and domain ([`shaping`]). Each recipient's outcome (delivered,
//! deferred with backoff, bounced, expired, or left unsent because the suppression
//! list has it: [`suppressed`]) becomes one atomic queue resolution and one
//! [`postroad_queue::DeliveryEvent`] ([`deliver`], [`retry`]). Routing rules can send
//! mail through HTTP providers instead, with fallbacks ([`provider`]): SMTP sites and
//! providers are the [`transport`]s of a message's route.

mod adaptive;
mod automation;
pub mod client;
pub mod config;
pub mod deliver;
pub mod dsn;
mod engine;
pub mod gate;
mod lanes;
pub mod mx_provider;
mod pace;
pub mod provider;
pub mod retry;
pub mod route;
pub mod shaping;
pub mod shared_rate;
pub mod site;
pub mod suppressed;
mod tls_roots;
pub mod transport;

pub use client::TlsPolicy;
pub use config::{RelayConfig, RouteConfig};
pub use engine::{Relay, RelayError};
pub use gate::{CampaignGate, Gate};
pub use provider::{ProviderConfig, ProviderKind, ProviderView};
pub use shaping::{Shaping, ShapingError};
pub use site::SiteView;
pub use suppressed::SuppressionList;
