//! Certificates from an ACME CA (RFC 8555) for the ingress: `[ingress.acme]`.
//!
//! ```text
//!  registry snapshot ─► domains (<service>.<zone>, or acme.domains)
//!        │                    │ no valid certificate, or 2/3 of its life gone (plan)
//!        ▼                    ▼
//!   AcmeCerts ◄── store ◄── order: account ─► new order ─► challenge (Challenges, answered
//!   (served by SNI)  (state_dir/acme)         by the ingress) ─► CSR ─► chain
//! ```
//!
//! One task orders one domain at a time. A failed order is logged, counted and retried with
//! capped exponential backoff ([`plan::Backoff`]); meanwhile the last good certificate, or the
//! self-signed fallback, keeps being served. A service that disappears keeps its files.

pub mod challenge;
pub mod fleet;
pub mod plan;
pub mod schedule;
pub mod store;

use crate::config::{AcmeChallenge, AcmeConfig};
use crate::part::Part;
use crate::registry::{Registry, Snapshot};
use crate::shutdown::Shutdown;
use challenge::Challenges;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use schedule::{Claimed, Decision, Schedule};
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use store::{AcmeCerts, Issued, Store};

/// How long one order may wait for the CA's validation, then for the certificate.
const ORDER_POLL: Duration = Duration::from_secs(90);
/// The longest sleep between two looks at what is due (renewals are rechecked at least this
/// often, so a changed clock or a missed wake-up costs at most this).
const RECHECK: Duration = Duration::from_secs(3600);
/// In a fleet: how long the orderer gives the other nodes' watches to receive a pending
/// challenge before it tells the CA to validate (etcd delivers watch events within
/// milliseconds; the CA may reach any node).
const CHALLENGE_SPREAD: Duration = Duration::from_secs(1);

/// Counters for /metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub orders_ok: AtomicU64,
    pub orders_failed: AtomicU64,
}

/// What the ingress and the admin API share with the ACME task.
#[derive(Clone)]
pub struct Acme {
    pub certs: Arc<AcmeCerts>,
    pub challenges: Arc<Challenges>,
    pub stats: Arc<Stats>,
}

impl Acme {
    /// Loads the stored certificates (they are served at once); [`Acme::spawn`] starts
    /// ordering.
    pub fn load(state_dir: &Path, cfg: &AcmeConfig) -> Acme {
        let certs = Arc::new(AcmeCerts::default());
        let store = Store::new(state_dir, &cfg.directory);
        for (domain, issued) in store.load_certs() {
            tracing::info!(%domain, serial = %issued.serial, not_after = issued.validity.not_after, "acme: loaded a stored certificate");
            certs.insert(&domain, issued);
        }
        Acme {
            certs,
            challenges: Arc::default(),
            stats: Arc::default(),
        }
    }

    /// The part that orders and renews; with `fleet`, also the watcher of the fleet's
    /// certificates and challenges in etcd.
    pub fn start(
        &self,
        cfg: &AcmeConfig,
        zone: &str,
        state_dir: &Path,
        fleet: Option<Arc<fleet::Fleet>>,
        registry: &Arc<Registry>,
        shutdown: &Shutdown,
    ) -> Part<Error> {
        let mut part = Part::new();
        let tasks = &mut part;
        #[cfg(feature = "etcd")]
        if let Some(f) = &fleet {
            f.spawn_watcher(
                self.certs.clone(),
                self.challenges.clone(),
                Store::new(state_dir, &cfg.directory),
                shutdown,
                tasks,
            );
        }
        let ctx = Ctx {
            cfg: cfg.clone(),
            zone: zone.to_ascii_lowercase(),
            store: Store::new(state_dir, &cfg.directory),
            acme: self.clone(),
            fleet,
        };
        let (registry, shutdown) = (registry.clone(), shutdown.clone());
        tasks.spawn(async move {
            run(ctx, registry, shutdown).await;
            Ok(())
        });
        part
    }
}

struct Ctx {
    cfg: AcmeConfig,
    zone: String,
    store: Store,
    acme: Acme,
    fleet: Option<Arc<fleet::Fleet>>,
}

/// The names that need certificates: `acme.domains`, else `<service>.<zone>` of every
/// service in the snapshot.
pub fn wanted(cfg: &AcmeConfig, zone: &str, snap: &Snapshot) -> BTreeSet<String> {
    match &cfg.domains {
        Some(d) => d.iter().map(|d| d.to_ascii_lowercase()).collect(),
        None => snap
            .containers()
            .filter_map(|c| c.labels.get(&snap.service_label))
            .map(|s| format!("{}.{zone}", s.to_ascii_lowercase()))
            .collect(),
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn run(ctx: Ctx, registry: Arc<Registry>, mut shutdown: Shutdown) {
    let mut rx = registry.subscribe();
    let mut task = Task {
        account: None,
        schedule: Schedule::new(ctx.cfg.retry_initial),
        ari: AriState::default(),
    };
    loop {
        let domains = wanted(&ctx.cfg, &ctx.zone, &rx.borrow_and_update().clone());
        let mut wake = unix_now() + RECHECK.as_secs();
        for domain in &domains {
            match task.domain(&ctx, domain, &mut shutdown).await {
                Some(at) => wake = wake.min(at),
                None => return,
            }
        }
        let sleep = Duration::from_secs(wake.saturating_sub(unix_now()).max(1));
        tokio::select! {
            _ = shutdown.wait() => return,
            changed = rx.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// The ACME task's state across passes.
struct Task {
    account: Option<Account>,
    schedule: Schedule,
    ari: AriState,
}

impl Task {
    /// One look at `domain`: ordered when due (in a fleet, when this node holds its lock).
    /// When to look again; `None` when shutdown came meanwhile.
    async fn domain(&mut self, ctx: &Ctx, domain: &str, shutdown: &mut Shutdown) -> Option<u64> {
        let now = unix_now();
        let current = ctx.acme.certs.get(domain);
        let renew_at = match &current {
            Some(i) => {
                let at = tokio::select! {
                    _ = shutdown.wait() => return None,
                    at = self.ari.renew_at(ctx, &mut self.account, domain, i, now) => at,
                };
                Some(at)
            }
            None => None,
        };
        if let Decision::Later(at) = self.schedule.decide(domain, renew_at, now) {
            // a certificate not due yet: the CA's renewal window is asked again when stale
            return Some(at.min(self.ari.next_check(domain)));
        }
        // in a fleet, the domain's lock decides which node orders
        let mut lock = None;
        if let Some(f) = &ctx.fleet {
            let (claimed, l) = claim(ctx, f, domain, now, current.as_ref()).await;
            if let Decision::Later(at) = self.schedule.claimed(domain, claimed, now) {
                return Some(at);
            }
            lock = l;
        }
        let attempt = async {
            if self.account.is_none() {
                self.account = Some(open_account(ctx).await?);
            }
            let acct = self.account.as_ref().ok_or(Error::NoAccount)?;
            order(ctx, acct, domain, lock.as_deref_mut()).await
        };
        let result = tokio::select! {
            _ = shutdown.wait() => None,
            r = attempt => Some(r),
        };
        let next = match result {
            None => None,
            Some(Ok((issued, chain, key))) => {
                if let Some(l) = &mut lock {
                    share_cert(l, domain, &chain, &key, &ctx.cfg.directory).await;
                }
                ctx.acme.stats.orders_ok.fetch_add(1, Relaxed);
                self.schedule.succeeded(domain);
                tracing::info!(%domain, serial = %issued.serial, not_after = issued.validity.not_after, renewal = current.is_some(), "acme: certificate issued");
                let at = issued.validity.renew_at();
                ctx.acme.certs.insert(domain, issued);
                Some(at)
            }
            Some(Err(e)) => Some(
                self.failed(ctx, domain, e, current.is_some(), lock.as_deref_mut())
                    .await,
            ),
        };
        if let Some(l) = lock {
            l.release().await;
        }
        next
    }

    /// A failed order: counted, logged, its retry state kept (and shared with the fleet);
    /// a refused or forgotten account is opened anew next time. When to look again.
    async fn failed(
        &mut self,
        ctx: &Ctx,
        domain: &str,
        e: Error,
        has_cert: bool,
        lock: Option<&mut fleet::Lock>,
    ) -> u64 {
        ctx.acme.stats.orders_failed.fetch_add(1, Relaxed);
        let now = unix_now();
        let nb = self
            .schedule
            .failed(domain, now, e.is_problem("rateLimited"));
        let serving = if has_cert {
            "the last certificate"
        } else {
            "the self-signed fallback"
        };
        tracing::warn!(%domain, failures = nb.failures, retry_in_s = nb.next_at.saturating_sub(now), serving, "acme: order failed: {e}");
        if let Some(l) = lock
            && let Err(e) = l.put_backoff(nb).await
        {
            tracing::warn!(%domain, "acme: the fleet's retry state: {e}");
        }
        if matches!(
            e,
            Error::Ca {
                what: "account",
                ..
            }
        ) {
            self.account = None;
        }
        if e.is_problem("accountDoesNotExist") {
            // the CA forgot the account (a test CA restarted, or it was deactivated): a new
            // one next time
            tracing::warn!("acme: the CA does not know the stored account; creating a new one");
            ctx.store.remove_account();
            self.account = None;
        }
        nb.next_at
    }
}

/// Claims `domain` in the fleet; a certificate the fleet has is stored and served here.
async fn claim(
    ctx: &Ctx,
    f: &fleet::Fleet,
    domain: &str,
    now: u64,
    current: Option<&Issued>,
) -> (Claimed, Option<Box<fleet::Lock>>) {
    if !f.synced() {
        return (Claimed::NotSynced, None);
    }
    match f
        .claim(domain, now, current.map(|c| c.serial.as_str()))
        .await
    {
        Err(e) => {
            tracing::warn!(%domain, "acme: cannot coordinate with the fleet: {e}");
            (Claimed::Unreachable, None)
        }
        Ok(fleet::Claim::Held(by)) => {
            tracing::debug!(%domain, %by, "acme: another node is ordering");
            (Claimed::Held, None)
        }
        Ok(fleet::Claim::Have(issued, rec)) => {
            let renew_at = issued.validity.renew_at();
            if let Err(e) = ctx.store.save_cert(domain, &rec.chain, &rec.key) {
                tracing::warn!(%domain, "acme: {e}");
            }
            ctx.acme.certs.insert(domain, *issued);
            (Claimed::Have { renew_at }, None)
        }
        Ok(fleet::Claim::Wait(b)) => (Claimed::Wait(b), None),
        Ok(fleet::Claim::Mine(l)) => (Claimed::Mine, Some(l)),
    }
}

/// What the CA said through ACME Renewal Information (RFC 9773), per domain.
#[derive(Default)]
struct AriState {
    /// Cleared when the CA's directory has no renewalInfo (then 2/3 of the lifetime rules).
    unsupported: bool,
    by_domain: HashMap<String, AriEntry>,
}

struct AriEntry {
    serial: String,
    renew_at: Option<u64>,
    next_check: u64,
}

/// How long an ARI answer holds at least and at most (RFC 9773 §4.3: the CA's Retry-After,
/// within reason), and the wait after a failed look.
const ARI_MIN: u64 = 3600;
const ARI_MAX: u64 = 24 * 3600;
/// Bound on one look at the renewal information (with opening the account).
const ARI_TIMEOUT: Duration = Duration::from_secs(20);

impl AriState {
    fn next_check(&self, domain: &str) -> u64 {
        match self.by_domain.get(domain) {
            Some(e) if !self.unsupported => e.next_check,
            _ => u64::MAX,
        }
    }

    /// When `current` should be renewed: the CA's suggestion when it gives one, else two
    /// thirds of the lifetime. Asks the CA again when the last answer is stale.
    async fn renew_at(
        &mut self,
        ctx: &Ctx,
        account: &mut Option<Account>,
        domain: &str,
        current: &Issued,
        now: u64,
    ) -> u64 {
        let fallback = current.validity.renew_at();
        if self.unsupported {
            return fallback;
        }
        let known = self
            .by_domain
            .get(domain)
            .filter(|e| e.serial == current.serial);
        if let Some(e) = known
            && now < e.next_check
        {
            return e.renew_at.unwrap_or(fallback);
        }
        let last = known.and_then(|e| e.renew_at);
        let answer = tokio::time::timeout(ARI_TIMEOUT, ask_ari(ctx, account, current, now))
            .await
            .unwrap_or_else(|_| {
                Err(AriError::Failed(Error::Timeout {
                    what: "renewal information",
                    after: ARI_TIMEOUT,
                }))
            });
        let (renew_at, next_check) = match answer {
            Ok(Some((at, recheck))) => {
                tracing::info!(%domain, renew_at = at, "acme: the CA's renewal window (ARI)");
                (Some(at), now + recheck.clamp(ARI_MIN, ARI_MAX))
            }
            Ok(None) => (last, now + ARI_MAX),
            Err(AriError::Unsupported) => {
                tracing::info!(
                    "acme: the CA offers no renewal information (ARI); renewing at 2/3 of each certificate's lifetime"
                );
                self.unsupported = true;
                return fallback;
            }
            Err(AriError::Failed(e)) => {
                tracing::debug!(%domain, "acme: renewal information: {e}");
                (last, now + ARI_MIN)
            }
        };
        self.by_domain.insert(
            domain.to_owned(),
            AriEntry {
                serial: current.serial.clone(),
                renew_at,
                next_check,
            },
        );
        renew_at.unwrap_or(fallback)
    }
}

/// Why an order (or the account, or a stored certificate) failed: logged with the domain,
/// counted, and retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CA refused or did not answer (`what`: account, new order, validation, …).
    #[error("{what}: {source}")]
    Ca {
        what: &'static str,
        source: instant_acme::Error,
    },
    #[error("authorization is {0}")]
    Authorization(String),
    #[error("the CA offers no {0} challenge")]
    NoChallenge(String),
    #[error("order is {0} after validation")]
    Order(String),
    #[error("{what}: {source}")]
    Key {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("{what}: {source}")]
    Pem {
        what: &'static str,
        source: rustls::pki_types::pem::Error,
    },
    #[error("chain: {0}")]
    Chain(&'static str),
    #[error("{what}: {source}")]
    Rustls {
        what: &'static str,
        source: rustls::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Json {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("{what}: no answer within {after:?}")]
    Timeout { what: &'static str, after: Duration },
    #[error("no account")]
    NoAccount,
    #[error(transparent)]
    Fleet(#[from] fleet::FleetError),
}

impl Error {
    /// Whether the CA answered with this ACME problem type (RFC 8555 §6.7), such as
    /// `rateLimited` or `accountDoesNotExist`, anywhere in its answer (subproblems too).
    pub fn is_problem(&self, kind: &str) -> bool {
        matches!(self, Error::Ca { .. } | Error::Fleet(_)) && self.to_string().contains(kind)
    }
}

enum AriError {
    Unsupported,
    Failed(Error),
}

/// The CA's suggested renewal time for `current` and when to ask again; `None` when the
/// certificate has no authority key identifier (no ARI identity) or the window is nonsense.
async fn ask_ari(
    ctx: &Ctx,
    account: &mut Option<Account>,
    current: &Issued,
    now: u64,
) -> Result<Option<(u64, u64)>, AriError> {
    let Some((aki, serial)) = current.key.cert.first().and_then(|c| plan::ari_id_parts(c)) else {
        return Ok(None);
    };
    if account.is_none() {
        *account = Some(open_account(ctx).await.map_err(AriError::Failed)?);
    }
    let acct = account.as_ref().ok_or(AriError::Unsupported)?;
    let id =
        instant_acme::CertificateIdentifier::new(aki.as_slice().into(), serial.as_slice().into());
    let (info, retry_after) = match acct.renewal_info(&id).await {
        Err(instant_acme::Error::Unsupported(_)) => return Err(AriError::Unsupported),
        Err(source) => {
            return Err(AriError::Failed(Error::Ca {
                what: "renewal information",
                source,
            }));
        }
        Ok(a) => a,
    };
    let mut pick = [0u8; 4];
    let pick = match ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut pick) {
        Ok(()) => f64::from(u32::from_le_bytes(pick)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 0.5,
    };
    let w = &info.suggested_window;
    Ok(
        plan::ari_renew_at(w.start.unix_timestamp(), w.end.unix_timestamp(), now, pick)
            .map(|at| (at, retry_after.as_secs())),
    )
}

/// The stored account, or a new one (stored at once).
async fn open_account(ctx: &Ctx) -> Result<Account, Error> {
    let builder = || match &ctx.cfg.ca_file {
        Some(ca) => Account::builder_with_root(ca),
        None => Account::builder(),
    };
    let stored = ctx.store.load_account().filter(|json| {
        // an account belongs to one CA: after a change of `directory`, a new one
        let dir = serde_json::from_slice::<serde_json::Value>(json)
            .ok()
            .and_then(|v| v.get("directory")?.as_str().map(str::to_owned));
        let same = dir.as_deref() == Some(ctx.cfg.directory.as_str());
        if !same {
            tracing::warn!(stored = ?dir, configured = %ctx.cfg.directory, "acme: the stored account is for another CA; creating one");
        }
        same
    });
    if let Some(json) = stored {
        match serde_json::from_slice::<AccountCredentials>(&json) {
            Ok(creds) => {
                let acct = builder()
                    .map_err(err("account"))?
                    .from_credentials(creds)
                    .await
                    .map_err(err("account"))?;
                tracing::info!(id = acct.id(), "acme: using the stored account");
                return Ok(acct);
            }
            Err(e) => {
                tracing::warn!("acme: the stored account does not parse ({e}); creating a new one")
            }
        }
    }
    let contact = format!("mailto:{}", ctx.cfg.email);
    let (acct, creds) = builder()
        .map_err(err("account"))?
        .create(
            &NewAccount {
                contact: &[&contact],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            ctx.cfg.directory.clone(),
            None,
        )
        .await
        .map_err(err("account"))?;
    let json = serde_json::to_vec(&creds).map_err(|source| Error::Json {
        what: "account",
        source,
    })?;
    ctx.store.save_account(&json)?;
    tracing::info!(id = acct.id(), "acme: created an account");
    Ok(acct)
}

/// Maps an instant-acme error to a message naming the step.
fn err(what: &'static str) -> impl Fn(instant_acme::Error) -> Error {
    move |source| Error::Ca { what, source }
}

/// Puts a new certificate into etcd for the other nodes, a few times if etcd fails (else
/// they would order it again once the lock is gone).
async fn share_cert(lock: &mut fleet::Lock, domain: &str, chain: &str, key: &str, ca: &str) {
    for attempt in 1..=3 {
        match lock.put_cert(chain, key, ca).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(%domain, attempt, "acme: sharing the certificate with the fleet: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// One order for one domain, from the new order to the stored certificate (returned with
/// its PEM chain and key). With `share`, the pending challenges go to the fleet too.
async fn order(
    ctx: &Ctx,
    account: &Account,
    domain: &str,
    mut share: Option<&mut fleet::Lock>,
) -> Result<(Issued, String, String), Error> {
    let ids = [Identifier::Dns(domain.to_owned())];
    let mut order = account
        .new_order(&NewOrder::new(&ids))
        .await
        .map_err(err("new order"))?;
    let kind = match ctx.cfg.challenge {
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        AcmeChallenge::Http01 => ChallengeType::Http01,
    };
    let challenges = &ctx.acme.challenges;
    let mut tokens = Vec::new();
    let result = async {
        let mut authzs = order.authorizations();
        while let Some(a) = authzs.next().await {
            let mut a = a.map_err(err("authorization"))?;
            match a.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                s => return Err(Error::Authorization(format!("{s:?}"))),
            }
            let mut ch = a
                .challenge(kind.clone())
                .ok_or_else(|| Error::NoChallenge(format!("{kind:?}")))?;
            let ka = ch.key_authorization();
            match kind {
                ChallengeType::Http01 => {
                    challenges.set_http(&ch.token, ka.as_str());
                    tokens.push(ch.token.clone());
                    if let Some(l) = share.as_deref_mut() {
                        l.put_http(&ch.token, ka.as_str()).await?;
                    }
                }
                _ => {
                    challenges.set_alpn(domain, ka.digest().as_ref())?;
                    if let Some(l) = share.as_deref_mut() {
                        l.put_alpn(ka.digest().as_ref()).await?;
                    }
                }
            }
            if share.is_some() {
                tokio::time::sleep(CHALLENGE_SPREAD).await;
            }
            ch.set_ready().await.map_err(err("challenge"))?;
        }
        let status = order
            .poll_ready(&RetryPolicy::new().timeout(ORDER_POLL))
            .await
            .map_err(err("validation"))?;
        if status != OrderStatus::Ready {
            return Err(Error::Order(format!("{status:?}")));
        }
        Ok(())
    }
    .await;
    for t in &tokens {
        challenges.clear(domain, Some(t));
    }
    challenges.clear(domain, None);
    result?;
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| {
        Error::Key {
            what: "key",
            source,
        }
    })?;
    let mut params =
        rcgen::CertificateParams::new(vec![domain.to_owned()]).map_err(|source| Error::Key {
            what: "csr",
            source,
        })?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&kp).map_err(|source| Error::Key {
        what: "csr",
        source,
    })?;
    order
        .finalize_csr(csr.der())
        .await
        .map_err(err("finalize"))?;
    let chain = order
        .poll_certificate(&RetryPolicy::new().timeout(ORDER_POLL))
        .await
        .map_err(err("certificate"))?;
    let key_pem = kp.serialize_pem();
    let issued = Issued::from_pem(chain.as_bytes(), key_pem.as_bytes())?;
    ctx.store.save_cert(domain, &chain, &key_pem)?;
    Ok((issued, chain, key_pem))
}

impl Acme {
    /// Appends `vxgate_acme_*` to `out`.
    pub fn render_metrics(&self, out: &mut String) {
        use vxgate_metrics::text::{by_label, escape, family};
        let acme = self;
        by_label(
            out,
            "vxgate_acme_orders_total",
            "counter",
            "ACME orders by result (a failed one is retried with backoff).",
            "result",
            &[
                ("ok", acme.stats.orders_ok.load(Relaxed)),
                ("failed", acme.stats.orders_failed.load(Relaxed)),
            ],
        );
        family(
            out,
            "vxgate_acme_certificate_expiry_seconds",
            "gauge",
            "Unix time at which each ACME certificate expires.",
        );
        for (domain, issued) in acme.certs.all() {
            let _ = writeln!(
                out,
                "vxgate_acme_certificate_expiry_seconds{{domain=\"{}\"}} {}",
                escape(&domain),
                issued.validity.not_after
            );
        }
    }
}
