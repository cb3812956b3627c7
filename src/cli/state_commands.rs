//! The commands that manage Portico's own state: `clients`, `users`, `keys`, `subscriptions`.
//! They read only the `[server]` and `[state]` settings, so they work before a PMS is configured.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;

use crate::auth::scope::{self, Scope};
use crate::auth::token_endpoint::grant_scopes;
use crate::auth::tokens::{Grant, TokenService};
use crate::config;
use crate::state::StateStore;
use crate::state::clients::{ClientKind, NewClient};
use crate::state::users::Role;

#[derive(Subcommand)]
pub enum ClientsCommand {
    /// Register a client. A symmetric client's secret is generated and printed once unless given.
    Add {
        /// A name people recognise (shown on the consent page).
        #[arg(long)]
        name: String,
        /// The client id (generated when left out).
        #[arg(long)]
        id: Option<String>,
        #[arg(long, value_enum, default_value_t = KindArg::Public)]
        kind: KindArg,
        /// An exact redirect URI; repeat for several.
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// The scopes the client may be granted, space separated (e.g. "system/*.rs").
        #[arg(long, default_value = "")]
        scopes: String,
        /// Asymmetric clients: where their JWKS is published.
        #[arg(long)]
        jwks_url: Option<String>,
        /// Asymmetric clients: a file holding their JWKS (JSON).
        #[arg(long)]
        jwks: Option<PathBuf>,
        /// Symmetric clients: read the secret from the first line of standard input.
        #[arg(long)]
        secret_stdin: bool,
    },
    /// Register every client of a TOML file (`[[client]]` tables with the fields of `add`).
    Load {
        file: PathBuf,
    },
    List,
    /// Remove a client; every token issued to it stops working.
    Remove {
        id: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum KindArg {
    Public,
    Symmetric,
    Asymmetric,
}

impl From<KindArg> for ClientKind {
    fn from(kind: KindArg) -> ClientKind {
        match kind {
            KindArg::Public => ClientKind::Public,
            KindArg::Symmetric => ClientKind::Symmetric,
            KindArg::Asymmetric => ClientKind::Asymmetric,
        }
    }
}

#[derive(Subcommand)]
pub enum SubscriptionsCommand {
    /// One line per subscription: status, events, backlog, last delivery, failures, next retry.
    List,
    /// One subscription in full, with its latest events and change detection's progress.
    Show { id: String },
    /// Try a failing subscription again now (and resume retries that stopped).
    Retry { id: String },
    /// Turn a subscription off (its owner may reactivate it).
    Disable { id: String },
}

#[derive(Subcommand)]
pub enum UsersCommand {
    /// Add a user. The password comes from standard input with --password-stdin, or is generated
    /// and printed once.
    Add {
        username: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// `Practitioner/<id>` for a clinician, `Patient/<id>` for a patient-portal user.
        #[arg(long)]
        fhir_user: Option<String>,
        #[arg(long)]
        password_stdin: bool,
    },
    List,
    /// Remove a user; their refresh and access tokens are revoked.
    Remove {
        username: String,
    },
    /// Set a new password (from standard input with --password-stdin, or generated and printed).
    Passwd {
        username: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum RoleArg {
    Clinician,
    Patient,
    Admin,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Role {
        match role {
            RoleArg::Clinician => Role::Clinician,
            RoleArg::Patient => Role::Patient,
            RoleArg::Admin => Role::Admin,
        }
    }
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Make a new signing key; the current one stops signing and verifies for one more day.
    Rotate,
    /// List the signing keys (ids and dates, never the keys).
    List,
}

/// What `portico token` needs: a registered client and the scopes to grant it.
#[derive(clap::Args)]
pub struct TokenArgs {
    /// A registered client id.
    #[arg(long)]
    pub client: String,
    /// Space-separated scopes, narrowed to what the client may have.
    #[arg(long)]
    pub scope: String,
    /// The patient in context (needed by patient/ scopes).
    #[arg(long)]
    pub patient: Option<String>,
    /// Lifetime in seconds (default auth.access_token_seconds).
    #[arg(long)]
    pub lifetime: Option<i64>,
    /// The FHIR base URL the token is for (default server.base_url, else
    /// http://<server.host>:<server.port>/fhir).
    #[arg(long)]
    pub aud: Option<String>,
}

/// The settings, unless `[auth.external]` hands authorization to an identity provider: then
/// Portico's own authorization server (its tokens, its launches) is not used, and saying so beats
/// printing something the server will refuse.
fn own_authorization_server(config_file: Option<&Path>) -> anyhow::Result<config::LocalSettings> {
    let settings = config::load_local(config_file)?;
    if let Some(idp) = &settings.auth.external {
        anyhow::bail!(
            "auth.external is set: authorization belongs to the identity provider {}; get tokens and launches there",
            idp.issuer
        );
    }
    Ok(settings)
}

/// Prints only an access token, signed with the state store's key, so scripts and curl work in
/// one line.
pub async fn token(config_file: Option<&Path>, args: TokenArgs) -> anyhow::Result<()> {
    let settings = own_authorization_server(config_file)?;
    let store = open_store(config_file).await?;
    let audience = args
        .aud
        .clone()
        .unwrap_or_else(|| match &settings.server.base_url {
            Some(base) => base.trim_end_matches('/').to_owned(),
            None => {
                let host = match settings.server.host.as_str() {
                    "0.0.0.0" | "::" => "127.0.0.1",
                    host => host,
                };
                format!("http://{host}:{}/fhir", settings.server.port)
            }
        });
    let lifetime = args.lifetime.unwrap_or(settings.auth.access_token_seconds);
    let token = issue_token(
        &store,
        &args.client,
        &args.scope,
        args.patient.as_deref(),
        &audience,
        lifetime,
    )
    .await?;
    println!("{token}");
    Ok(())
}

#[derive(clap::Args)]
pub struct LaunchArgs {
    /// The registered client the EHR launches.
    #[arg(long)]
    pub client: String,
    /// The patient the EHR has open.
    #[arg(long)]
    pub patient: Option<String>,
    /// The encounter the EHR has open.
    #[arg(long)]
    pub encounter: Option<String>,
}

/// Prints only the opaque `launch` value of a new EHR launch context (valid for five minutes, once,
/// for that client): the app is opened at its launch URL with `iss=<FHIR base>&launch=<value>`.
pub async fn launch(config_file: Option<&Path>, args: LaunchArgs) -> anyhow::Result<()> {
    own_authorization_server(config_file)?;
    let store = open_store(config_file).await?;
    let context = crate::state::authorizations::LaunchContext {
        client_id: args.client,
        patient: args.patient,
        encounter: args.encounter,
    };
    let value = crate::auth::authorization::new_launch(&store, &context, "portico launch").await?;
    println!("{value}");
    Ok(())
}

/// A token for a registered client, its scopes narrowed to the client's, for the FHIR base
/// `audience`: what `portico token` prints and the demo shows.
pub async fn issue_token(
    store: &StateStore,
    client_id: &str,
    scope_text: &str,
    patient: Option<&str>,
    audience: &str,
    lifetime: i64,
) -> anyhow::Result<String> {
    let client = store
        .client(client_id)
        .await?
        .with_context(|| format!("no client {client_id} (see portico clients list)"))?;
    let granted = grant_scopes(&client, Some(scope_text), |s| {
        matches!(s, Scope::Resource(_))
    })
    .map_err(|e| anyhow::anyhow!("{}", e.description()))?;
    let needs_patient = granted
        .iter()
        .any(|s| matches!(s, Scope::Resource(r) if r.context == scope::Context::Patient));
    if needs_patient && patient.is_none() {
        anyhow::bail!("patient/ scopes need a patient in context: add --patient <id>");
    }
    if lifetime <= 0 {
        anyhow::bail!("--lifetime must be a positive number of seconds");
    }
    let grant = Grant {
        client_id: client.client_id.clone(),
        subject: client.client_id.clone(),
        scope: scope::format_scopes(&granted),
        patient: patient.map(str::to_owned),
        ..Grant::default()
    };
    let (token, _) = TokenService::new(store.clone())
        .issue_for(&grant, audience, lifetime)
        .await?;
    Ok(token)
}

/// The demo's users, made (or given new passwords) on every start: a clinician (when the demo
/// serves a Practitioner), a patient-portal user and an admin. Returns the lines that tell the
/// user about them.
pub async fn demo_users(
    store: &StateStore,
    practitioner: Option<&str>,
    patient: &str,
) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    let mut users = vec![
        ("patient", Role::Patient, Some(format!("Patient/{patient}"))),
        ("admin", Role::Admin, None),
    ];
    if let Some(practitioner) = practitioner {
        users.insert(
            0,
            (
                "clinician",
                Role::Clinician,
                Some(format!("Practitioner/{practitioner}")),
            ),
        );
    }
    for (name, role, fhir_user) in users {
        let password = crate::state::random_token(12);
        if store.user(name).await?.is_some() {
            store.set_password(name, &password).await?;
        } else {
            store
                .add_user(name, &password, role, fhir_user.as_deref())
                .await?;
        }
        lines.push(format!(
            "  {role} user {name}, password {password}{}",
            fhir_user.map(|u| format!(" ({u})")).unwrap_or_default()
        ));
    }
    Ok(lines)
}

/// The demo's clients, registered anew on every start: the public app `demo-app` and the
/// confidential `demo-backend`. Returns the lines that tell the user about them.
pub async fn demo_clients(store: &StateStore) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    for id in ["demo-app", "demo-backend"] {
        store.remove_client(id).await?;
    }
    store
        .add_client(NewClient {
            client_id: Some("demo-app".into()),
            name: "Demo SMART app".into(),
            kind: Some(ClientKind::Public),
            redirect_uris: vec!["http://127.0.0.1:9999/callback".into()],
            allowed_scopes: "launch launch/patient openid fhirUser offline_access online_access patient/*.rs user/*.rs".into(),
            ..NewClient::default()
        })
        .await?;
    lines.push("  public app client demo-app (redirect URI http://127.0.0.1:9999/callback)".into());
    let (_, secret) = store
        .add_client(NewClient {
            client_id: Some("demo-backend".into()),
            name: "Demo backend service".into(),
            kind: Some(ClientKind::Symmetric),
            allowed_scopes: "system/*.rs system/Subscription.cruds patient/*.rs".into(),
            ..NewClient::default()
        })
        .await?;
    lines.push(format!(
        "  confidential client demo-backend, secret {} (system/*.rs system/Subscription.cruds patient/*.rs)",
        secret.unwrap_or_default()
    ));
    Ok(lines)
}

/// Opens the state store the settings (file and PORTICO_* variables) name.
pub async fn open_store(config_file: Option<&Path>) -> anyhow::Result<StateStore> {
    let settings = config::load_local(config_file)?;
    let url = settings.state.url(&settings.server.state_dir)?;
    StateStore::open(&url).await.with_context(|| {
        format!(
            "cannot open the state store {}",
            crate::db::redact_url(&url)
        )
    })
}

fn read_stdin_line(what: &str) -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .with_context(|| format!("cannot read the {what} from standard input"))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

pub async fn clients(config_file: Option<&Path>, command: ClientsCommand) -> anyhow::Result<()> {
    let store = open_store(config_file).await?;
    match command {
        ClientsCommand::Add {
            name,
            id,
            kind,
            redirect_uris,
            scopes,
            jwks_url,
            jwks,
            secret_stdin,
        } => {
            let jwks = match jwks {
                Some(path) => Some(
                    serde_json::from_str(
                        &std::fs::read_to_string(&path)
                            .with_context(|| format!("cannot read {}", path.display()))?,
                    )
                    .with_context(|| format!("{} is not JSON", path.display()))?,
                ),
                None => None,
            };
            let secret = if secret_stdin {
                Some(read_stdin_line("secret")?)
            } else {
                None
            };
            let (client, secret) = store
                .add_client(NewClient {
                    client_id: id,
                    name,
                    kind: Some(kind.into()),
                    secret,
                    jwks_url,
                    jwks,
                    redirect_uris,
                    allowed_scopes: scopes,
                })
                .await?;
            println!("client_id: {}", client.client_id);
            if let Some(secret) = secret {
                println!("client_secret: {secret}");
                println!("(shown once: Portico keeps only its hash)");
            }
        }
        ClientsCommand::Load { file } => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct ClientsFile {
                #[serde(default)]
                client: Vec<NewClient>,
            }
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let parsed: ClientsFile = toml::from_str(&text)
                .with_context(|| format!("{} is not a clients file", file.display()))?;
            for new in parsed.client {
                let (client, secret) = store.add_client(new).await?;
                match secret {
                    Some(secret) => println!("{} client_secret: {secret}", client.client_id),
                    None => println!("{}", client.client_id),
                }
            }
        }
        ClientsCommand::List => {
            for client in store.clients().await? {
                println!(
                    "{}\t{}\t{}\tscopes: {}\tredirect: {}",
                    client.client_id,
                    client.kind,
                    client.name,
                    client.allowed_scopes,
                    client.redirect_uris.join(" ")
                );
            }
        }
        ClientsCommand::Remove { id } => {
            if !store.remove_client(&id).await? {
                anyhow::bail!("no client {id}");
            }
            println!("removed client {id}");
        }
    }
    Ok(())
}

/// A time in milliseconds as UTC, or `-`.
pub(super) fn time_ms(ms: Option<i64>) -> String {
    ms.filter(|ms| *ms > 0)
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || "-".to_owned(),
            |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
        )
}

pub async fn subscriptions(
    config_file: Option<&Path>,
    command: SubscriptionsCommand,
) -> anyhow::Result<()> {
    let store = open_store(config_file).await?;
    match command {
        SubscriptionsCommand::List => {
            println!(
                "id\tclient\ttopic\tstatus\tevents\tbacklog\tlast delivery\tfailures\tnext retry"
            );
            for s in store.subscriptions(None).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    s.id,
                    s.client_id,
                    s.topic.as_deref().unwrap_or(s.resource_type.as_str()),
                    s.status,
                    s.events_since_start,
                    s.events_since_start - s.delivered_through,
                    time_ms(s.last_delivered_ms),
                    s.failed_attempts,
                    if s.retries_stopped {
                        "stopped".to_owned()
                    } else {
                        time_ms(Some(s.next_attempt_ms))
                    },
                );
            }
        }
        SubscriptionsCommand::Show { id } => {
            let s = store
                .subscription(&id)
                .await?
                .with_context(|| format!("no subscription {id}"))?;
            println!(
                "id: {}\nclient: {}\ntopic: {}\nresource type: {}\nchannel: {}",
                s.id,
                s.client_id,
                s.topic.as_deref().unwrap_or("-"),
                s.resource_type,
                s.channel
            );
            println!(
                "status: {}\nerror: {}",
                s.status,
                s.error.as_deref().unwrap_or("-")
            );
            println!(
                "events: {} (delivered through {}, backlog {})",
                s.events_since_start,
                s.delivered_through,
                s.events_since_start - s.delivered_through
            );
            println!(
                "handshake pending: {}\nlast sent: {}\nlast delivered: {}",
                s.handshake_pending,
                time_ms(s.last_sent_ms),
                time_ms(s.last_delivered_ms)
            );
            println!(
                "failures in a row: {} (failing since {})\nlast failure: {}\nnext attempt: {}{}",
                s.failed_attempts,
                time_ms(s.failing_since_ms),
                s.last_failure.as_deref().unwrap_or("-"),
                time_ms(Some(s.next_attempt_ms)),
                if s.retries_stopped {
                    " (retries stopped)"
                } else {
                    ""
                }
            );
            let first = (s.events_since_start - 9).max(1);
            for event in store
                .subscription_events(&s.id, first, s.events_since_start, 10)
                .await?
            {
                println!(
                    "event {}\t{}\t{} {}/{}",
                    event.number,
                    time_ms(Some(event.occurred_ms)),
                    event.change_kind,
                    event.resource_type,
                    event.resource_id
                );
            }
            for cursor in store.change_cursors().await? {
                println!(
                    "detection {}\tbaselined: {}\tcycle {}\twatermark {}",
                    cursor.mapping,
                    cursor.baselined,
                    cursor.cycle,
                    cursor.watermark.as_deref().unwrap_or("-")
                );
            }
        }
        SubscriptionsCommand::Retry { id } => {
            if !store.retry_subscription_now(&id).await? {
                anyhow::bail!("no subscription {id}");
            }
            println!("subscription {id} is due now");
        }
        SubscriptionsCommand::Disable { id } => {
            if !store
                .set_subscription_status(&id, "off", Some("turned off by the operator"))
                .await?
            {
                anyhow::bail!("no subscription {id}");
            }
            println!("subscription {id} is off");
        }
    }
    Ok(())
}

pub async fn users(config_file: Option<&Path>, command: UsersCommand) -> anyhow::Result<()> {
    let store = open_store(config_file).await?;
    let password = |from_stdin: bool| -> anyhow::Result<(String, bool)> {
        if from_stdin {
            Ok((read_stdin_line("password")?, false))
        } else {
            Ok((crate::state::random_token(15), true))
        }
    };
    match command {
        UsersCommand::Add {
            username,
            role,
            fhir_user,
            password_stdin,
        } => {
            let (password, generated) = password(password_stdin)?;
            let user = store
                .add_user(&username, &password, role.into(), fhir_user.as_deref())
                .await?;
            println!("added {} user {}", user.role, user.username);
            if generated {
                println!("password: {password}");
            }
        }
        UsersCommand::List => {
            for user in store.users().await? {
                println!(
                    "{}\t{}\t{}",
                    user.username,
                    user.role,
                    user.fhir_user.as_deref().unwrap_or("-")
                );
            }
        }
        UsersCommand::Remove { username } => {
            if !store.remove_user(&username).await? {
                anyhow::bail!("no user {username}");
            }
            println!("removed user {username}");
        }
        UsersCommand::Passwd {
            username,
            password_stdin,
        } => {
            let (password, generated) = password(password_stdin)?;
            if !store.set_password(&username, &password).await? {
                anyhow::bail!("no user {username}");
            }
            println!("password changed for {username}");
            if generated {
                println!("password: {password}");
            }
        }
    }
    Ok(())
}

pub async fn keys(config_file: Option<&Path>, command: KeysCommand) -> anyhow::Result<()> {
    let store = open_store(config_file).await?;
    match command {
        KeysCommand::Rotate => {
            let key = store.rotate_signing_key().await?;
            println!("signing with key {}", key.kid);
        }
        KeysCommand::List => {
            store.current_signing_key().await?;
            for key in store.verification_keys().await? {
                let state = match key.retired_at {
                    Some(at) => format!("retired at {at}"),
                    None => "signing".into(),
                };
                println!("{}\tcreated at {}\t{state}", key.kid, key.created_at);
            }
        }
    }
    Ok(())
}
