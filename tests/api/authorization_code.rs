//! The authorization-code flow over HTTP, as an app and a browser drive it: the `oauth2` crate
//! builds the authorization URL with PKCE S256 and exchanges the code; a cookie-keeping client
//! plays the browser through the sign-in, patient picker and consent pages. Covers the SMART
//! standalone and EHR launches, refresh rotation, id_tokens, and the negatives of
//! security-reliability.md §2.3 (1-20) on SQLite and PostgreSQL state stores.

use std::collections::BTreeMap;

use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, CsrfToken, EndpointNotSet, EndpointSet,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, Scope as OAuthScope,
    TokenResponse, TokenUrl,
};
use portico::state::clients::{ClientKind, NewClient};
use portico::state::users::Role;
use serde_json::Value as Json;

use crate::support;

const REDIRECT: &str = "http://127.0.0.1:9/app/callback";
const PASSWORD: &str = "correct horse battery";

struct SignInApp {
    base: String,
    state_url: String,
}

type AppClient =
    BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

impl SignInApp {
    /// Runs `body` against a server on each state store backend (SQLite, PostgreSQL), whose
    /// store has a public app, a second public app, a clinician, a patient-portal user for
    /// Patient/1 and an admin.
    async fn each(test: &str, body: impl AsyncFn(SignInApp)) {
        support::on_each_state_store(test, async |base: String| {
            let store = support::token_service(&base).store().clone();
            for id in ["smart-app", "other-app"] {
                store
                    .add_client(NewClient {
                        client_id: Some(id.into()),
                        name: format!("App {id}"),
                        kind: Some(ClientKind::Public),
                        redirect_uris: vec![REDIRECT.into()],
                        allowed_scopes: "launch launch/patient openid fhirUser offline_access online_access patient/*.rs user/*.rs".into(),
                        ..NewClient::default()
                    })
                    .await
                    .unwrap();
            }
            for (name, role, fhir_user) in [
                ("dr.house", Role::Clinician, Some("Practitioner/1")),
                ("pat.one", Role::Patient, Some("Patient/1")),
                ("admin", Role::Admin, None),
            ] {
                store
                    .add_user(name, PASSWORD, role, fhir_user)
                    .await
                    .unwrap();
            }
            let state_url = support::state_url_of(&base);
            body(SignInApp { base, state_url }).await
        })
        .await;
    }

    fn root(&self) -> String {
        self.base.trim_end_matches("/fhir").to_owned()
    }

    fn oauth(&self, client_id: &str) -> AppClient {
        BasicClient::new(ClientId::new(client_id.into()))
            .set_auth_uri(AuthUrl::new(format!("{}/auth/authorize", self.root())).unwrap())
            .set_token_uri(TokenUrl::new(format!("{}/auth/token", self.root())).unwrap())
            .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap())
    }

    /// An authorization URL as a SMART app makes it, with its state and PKCE verifier.
    fn authorize_url(
        &self,
        client_id: &str,
        scope: &str,
        extra: &[(&str, &str)],
    ) -> (String, CsrfToken, PkceCodeVerifier) {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let oauth = self.oauth(client_id);
        let mut request = oauth
            .authorize_url(CsrfToken::new_random)
            .set_pkce_challenge(challenge)
            .add_extra_param("aud", self.base.clone());
        for word in scope.split(' ') {
            request = request.add_scope(OAuthScope::new(word.into()));
        }
        for (name, value) in extra {
            request = request.add_extra_param(*name, *value);
        }
        let (url, state) = request.url();
        (url.to_string(), state, verifier)
    }

    async fn exchange(
        &self,
        client_id: &str,
        code: &str,
        verifier: PkceCodeVerifier,
    ) -> oauth2::basic::BasicTokenResponse {
        self.oauth(client_id)
            .exchange_code(AuthorizationCode::new(code.into()))
            .set_pkce_verifier(verifier)
            .request_async(&no_redirects())
            .await
            .expect("the code exchanges for tokens")
    }

    async fn token_form(&self, form: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, Json) {
        let response = no_redirects()
            .post(format!("{}/auth/token", self.root()))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.json().await.unwrap_or(Json::Null))
    }

    async fn read(&self, token: &str, path: &str) -> u16 {
        no_redirects()
            .get(format!("{}/{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// One browser: keeps its cookies, follows nothing by itself.
struct Browser {
    root: String,
    http: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

/// A page or a redirect as the browser got it.
struct Answer {
    status: u16,
    location: Option<String>,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    /// The value of a hidden input of the page's form.
    fn hidden(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let at = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no {name} in the page:\n{}", self.body));
        let rest = &self.body[at + marker.len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }
}

impl Browser {
    fn new(app: &SignInApp) -> Browser {
        Browser {
            root: app.root(),
            http: no_redirects(),
            cookies: BTreeMap::new(),
        }
    }

    fn absolute(&self, url: &str) -> String {
        if url.starts_with("http") {
            url.to_owned()
        } else {
            format!("{}{url}", self.root)
        }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Answer {
        let cookie: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let request = if cookie.is_empty() {
            request
        } else {
            request.header("cookie", cookie.join("; "))
        };
        let response = request.send().await.unwrap();
        for set in response.headers().get_all("set-cookie") {
            let pair = set.to_str().unwrap().split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.insert(name.into(), value.into());
        }
        Answer {
            status: response.status().as_u16(),
            location: response
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_owned()),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    async fn get(&mut self, url: &str) -> Answer {
        let request = self.http.get(self.absolute(url));
        self.send(request).await
    }

    async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Answer {
        let request = self.http.post(self.absolute(url)).form(form);
        self.send(request).await
    }

    /// Navigates to `url` and follows Portico's redirects.
    async fn open(&mut self, url: &str) -> Answer {
        let answer = self.get(url).await;
        self.follow(answer).await
    }

    /// Follows redirects inside Portico; stops at a page or at a redirect to the app.
    async fn follow(&mut self, mut answer: Answer) -> Answer {
        while let Some(location) = answer.location.clone() {
            if location.starts_with(REDIRECT) {
                return answer;
            }
            answer = self.get(&location).await;
        }
        answer
    }

    async fn login(&mut self, page: &Answer, username: &str, password: &str) -> Answer {
        let (tx, csrf) = (page.hidden("tx"), page.hidden("csrf"));
        let answer = self
            .post(
                "/auth/login",
                &[
                    ("tx", &tx),
                    ("csrf", &csrf),
                    ("username", username),
                    ("password", password),
                ],
            )
            .await;
        self.follow(answer).await
    }

    async fn pick(&mut self, page: &Answer, patient: &str) -> Answer {
        let (tx, csrf) = (page.hidden("tx"), page.hidden("csrf"));
        let answer = self
            .post(
                "/auth/pick",
                &[("tx", &tx), ("csrf", &csrf), ("patient", patient)],
            )
            .await;
        self.follow(answer).await
    }

    /// Submits the consent form with every scope still ticked except `untick`.
    async fn consent(&mut self, page: &Answer, decision: &str, untick: &[&str]) -> Answer {
        let (tx, csrf) = (page.hidden("tx"), page.hidden("csrf"));
        let mut form = vec![
            ("tx".to_owned(), tx),
            ("csrf".to_owned(), csrf),
            ("decision".to_owned(), decision.to_owned()),
        ];
        for scope in consent_scopes(page) {
            if !untick.contains(&scope.as_str()) {
                form.push(("scope".to_owned(), scope));
            }
        }
        let request = self.http.post(self.absolute("/auth/consent")).form(&form);
        let answer = self.send(request).await;
        self.follow(answer).await
    }
}

/// The scopes the consent page offers (its checkboxes).
fn consent_scopes(page: &Answer) -> Vec<String> {
    page.body
        .split("name=\"scope\" value=\"")
        .skip(1)
        .map(|rest| {
            rest[..rest.find('"').unwrap()]
                .replace("&amp;", "&")
                .replace("&quot;", "\"")
        })
        .collect()
}

/// The query parameters of a redirect to the app.
fn callback(answer: &Answer) -> BTreeMap<String, String> {
    let location = answer
        .location
        .as_deref()
        .unwrap_or_else(|| panic!("no redirect ({}):\n{}", answer.status, answer.body));
    assert!(location.starts_with(REDIRECT), "{location}");
    let query = location.split_once('?').map(|(_, q)| q).unwrap_or("");
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Signs `username` in through every page (picking `patient` when asked) and returns the
/// app's callback parameters.
async fn sign_in(
    browser: &mut Browser,
    url: &str,
    username: &str,
    patient: Option<&str>,
    untick: &[&str],
) -> BTreeMap<String, String> {
    let mut page = browser.open(url).await;
    // A browser signed in earlier goes on without the login page.
    if page.body.contains("id=\"username\"") {
        page = browser.login(&page, username, PASSWORD).await;
    }
    if page.body.contains("name=\"patient\"") {
        page = browser
            .pick(&page, patient.expect("a patient to pick"))
            .await;
    }
    assert!(page.body.contains("id=\"allow\""), "{}", page.body);
    let done = browser.consent(&page, "allow", untick).await;
    callback(&done)
}

#[tokio::test]
async fn standalone_launch_with_picker_refresh_rotation_and_id_token() {
    SignInApp::each("code_standalone", async |app: SignInApp| {
        let scope = "launch/patient openid fhirUser offline_access patient/*.rs";
        let (url, state, verifier) = app.authorize_url("smart-app", scope, &[("nonce", "n-0S6")]);
        let mut browser = Browser::new(&app);
        let answer = sign_in(&mut browser, &url, "dr.house", Some("2"), &[]).await;
        assert_eq!(
            answer["state"],
            *state.secret(),
            "state comes back unchanged"
        );
        assert_eq!(answer["iss"], format!("{}/auth", app.root()));
        let tokens = app.exchange("smart-app", &answer["code"], verifier).await;
        let access = tokens.access_token().secret().clone();
        let granted: Vec<String> = tokens
            .scopes()
            .unwrap()
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            granted,
            scope.split(' ').collect::<Vec<_>>(),
            "everything ticked is granted"
        );
        assert!(tokens.expires_in().unwrap().as_secs() <= 3600);

        // The picker showed the clinician patients: that was audited as their search through
        // this app, naming the patient picked among the ones listed.
        let trail: Json = no_redirects()
            .get(format!("{}/AuditEvent?agent=dr.house", app.base))
            .bearer_auth(support::bearer_for(&app.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let picker = trail["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["resource"])
            .find(|event| event["subtype"][0]["code"] == "search-type")
            .unwrap_or_else(|| panic!("no picker search audited: {trail}"));
        let named: Vec<&str> = picker["entity"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["what"]["reference"].as_str())
            .collect();
        assert!(named.contains(&"Patient/2"), "{picker}");
        assert!(
            picker["agent"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["who"]["identifier"]["value"] == "smart-app"),
            "{picker}"
        );

        // The picked patient is the token's whole world.
        assert_eq!(app.read(&access, "Patient/2").await, 200);
        assert_eq!(app.read(&access, "Patient/1").await, 404);

        // The raw answer: patient context, and an id_token that verifies with the JWKS.
        let introspected: Json = no_redirects()
            .post(format!("{}/auth/introspect", app.root()))
            .bearer_auth(&access)
            .form(&[("token", access.as_str())])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(introspected["active"], true);
        assert_eq!(introspected["patient"], "2");
        assert_eq!(
            introspected["fhirUser"],
            format!("{}/Practitioner/1", app.base)
        );
        let refresh = tokens.refresh_token().expect("offline_access").clone();
        let (next_access, next_refresh, id_token) = refresh_once(&app, &refresh, "smart-app").await;
        check_id_token(&app, &id_token, "smart-app", None).await;

        // The refresh above rotated: the first refresh token is spent, and presenting it again
        // revokes everything of this sign-in, including the token the rotation gave.
        assert_eq!(app.read(&next_access, "Patient/2").await, 200);
        let (status, _, body) = app
            .token_form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.secret()),
                ("client_id", "smart-app"),
            ])
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        assert_eq!(app.read(&next_access, "Patient/2").await, 401);
        assert_eq!(app.read(&access, "Patient/2").await, 401);
        let (status, _, _) = app
            .token_form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", &next_refresh),
                ("client_id", "smart-app"),
            ])
            .await;
        assert_eq!(status, 400, "the whole family is revoked");
    })
    .await;
}

/// Refreshes once (raw, to see the headers and every field): returns the new access token, the
/// new refresh token and the id_token the answer carries (openid is in the grant).
async fn refresh_once(
    app: &SignInApp,
    refresh: &RefreshToken,
    client_id: &str,
) -> (String, String, String) {
    let (status, headers, body) = app
        .token_form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.secret()),
            ("client_id", client_id),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["pragma"], "no-cache");
    assert_ne!(body["refresh_token"], refresh.secret().as_str(), "rotated");
    assert_eq!(body["patient"], "2");
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
        body["id_token"].as_str().expect("an id_token").to_owned(),
    )
}

/// An id_token: RS256, signed by a key of the JWKS, for the client, naming the user.
async fn check_id_token(app: &SignInApp, id_token: &str, client_id: &str, nonce: Option<&str>) {
    let header = jsonwebtoken::decode_header(id_token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    let jwks: jsonwebtoken::jwk::JwkSet = reqwest::get(format!("{}/auth/jwks", app.root()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = jwks.find(header.kid.as_deref().unwrap()).expect("its key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[client_id]);
    validation.set_issuer(&[format!("{}/auth", app.root())]);
    let claims = jsonwebtoken::decode::<Json>(
        id_token,
        &jsonwebtoken::DecodingKey::from_jwk(key).unwrap(),
        &validation,
    )
    .expect("the id_token verifies")
    .claims;
    assert_eq!(claims["sub"], "dr.house");
    assert_eq!(claims["fhirUser"], format!("{}/Practitioner/1", app.base));
    assert_eq!(claims["nonce"].as_str(), nonce);
}

#[tokio::test]
async fn the_code_exchange_answers_with_an_id_token_carrying_the_nonce() {
    SignInApp::each("code_id_token", async |app: SignInApp| {
        let (url, _, verifier) = app.authorize_url(
            "smart-app",
            "openid fhirUser user/*.rs",
            &[("nonce", "n-0S6_WzA2Mj")],
        );
        let mut browser = Browser::new(&app);
        let answer = sign_in(&mut browser, &url, "dr.house", None, &[]).await;
        let (status, _, body) = app
            .token_form(&[
                ("grant_type", "authorization_code"),
                ("code", &answer["code"]),
                ("redirect_uri", REDIRECT),
                ("client_id", "smart-app"),
                ("code_verifier", verifier.secret()),
            ])
            .await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body.get("refresh_token").is_none(),
            "no offline/online access asked"
        );
        assert!(body.get("patient").is_none(), "no patient context asked");
        check_id_token(
            &app,
            body["id_token"].as_str().unwrap(),
            "smart-app",
            Some("n-0S6_WzA2Mj"),
        )
        .await;
        // A clinician's user/ scopes reach every patient.
        let access = body["access_token"].as_str().unwrap();
        assert_eq!(app.read(access, "Patient/1").await, 200);
        assert_eq!(app.read(access, "Patient/2").await, 200);
    })
    .await;
}

#[tokio::test]
async fn a_patient_portal_user_skips_the_picker_and_sees_only_their_record() {
    SignInApp::each("code_portal", async |app: SignInApp| {
        let (url, _, verifier) =
            app.authorize_url("smart-app", "launch/patient openid fhirUser user/*.rs", &[]);
        let mut browser = Browser::new(&app);
        let answer = sign_in(&mut browser, &url, "pat.one", None, &[]).await;
        let tokens = app.exchange("smart-app", &answer["code"], verifier).await;
        let access = tokens.access_token().secret();
        assert_eq!(app.read(access, "Patient/1").await, 200);
        assert_eq!(app.read(access, "Patient/2").await, 404);

        // Signed in already: a second app's authorization goes straight to consent.
        let (url, _, _) = app.authorize_url("other-app", "launch/patient patient/*.rs", &[]);
        let page = browser.open(&url).await;
        assert!(page.body.contains("id=\"allow\""), "{}", page.body);
        assert!(!page.body.contains("id=\"username\""));
    })
    .await;
}

#[tokio::test]
async fn consent_may_grant_fewer_scopes_or_none() {
    SignInApp::each("code_consent", async |app: SignInApp| {
        let scope = "launch/patient patient/Patient.rs patient/Observation.rs offline_access";
        let (url, _, verifier) = app.authorize_url("smart-app", scope, &[]);
        let mut browser = Browser::new(&app);
        let answer = sign_in(
            &mut browser,
            &url,
            "dr.house",
            Some("1"),
            &["patient/Observation.rs", "offline_access"],
        )
        .await;
        let tokens = app.exchange("smart-app", &answer["code"], verifier).await;
        let granted: Vec<String> = tokens
            .scopes()
            .unwrap()
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(granted, ["launch/patient", "patient/Patient.rs"]);
        assert!(tokens.refresh_token().is_none());
        let access = tokens.access_token().secret();
        assert_eq!(app.read(access, "Patient/1").await, 200);
        assert_eq!(app.read(access, "Observation?patient=1").await, 403);

        // Deny: the app hears access_denied with its state, and gets no code.
        let (url, state, _) = app.authorize_url("smart-app", scope, &[]);
        let page = browser.open(&url).await;
        let page = if page.body.contains("name=\"patient\"") {
            browser.pick(&page, "1").await
        } else {
            page
        };
        let denied = callback(&browser.consent(&page, "deny", &[]).await);
        assert_eq!(denied["error"], "access_denied");
        assert_eq!(denied["state"], *state.secret());
        assert!(!denied.contains_key("code"));
    })
    .await;
}

#[tokio::test]
async fn authorization_requests_that_must_not_yield_a_code() {
    SignInApp::each("code_authorize_errors", async |app: SignInApp| {
        let (good, _, _) = app.authorize_url("smart-app", "launch/patient patient/*.rs", &[]);
        let mut browser = Browser::new(&app);

        // 1, 7: redirect URIs that are not exactly the registered one get Portico's page, never a
        // redirect, and the endpoint allows no cross-origin reads.
        let registered = form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>();
        for wrong in [
            format!("{REDIRECT}/"),
            REDIRECT.to_uppercase(),
            format!("{REDIRECT}?x=1"),
            REDIRECT.replace("http:", "https:"),
            REDIRECT.replace(":9/", ":10/"),
        ] {
            let wrong = form_urlencoded::byte_serialize(wrong.as_bytes()).collect::<String>();
            let answer = browser.get(&good.replace(&registered, &wrong)).await;
            assert_eq!(answer.status, 400, "{wrong}");
            assert!(answer.location.is_none(), "{wrong}");
            assert!(answer.headers.get("access-control-allow-origin").is_none());
        }
        let unknown = browser
            .get(&good.replace("client_id=smart-app", "client_id=nobody"))
            .await;
        assert_eq!((unknown.status, unknown.location.is_none()), (400, true));

        // 2-5 and a missing state: an error at the app's redirect URI, never a code.
        let aud = form_urlencoded::byte_serialize(app.base.as_bytes()).collect::<String>();
        let cases = [
            (
                good.replace(&aud, "https%3A%2F%2Fevil.example%2Ffhir"),
                "invalid_request",
            ),
            (strip_param(&good, "code_challenge"), "invalid_request"),
            (
                good.replace("code_challenge_method=S256", "code_challenge_method=plain"),
                "invalid_request",
            ),
            (
                strip_param(&good, "code_challenge_method"),
                "invalid_request",
            ),
            (
                good.replace("response_type=code", "response_type=token"),
                "unsupported_response_type",
            ),
            (strip_param(&good, "state"), "invalid_request"),
            (strip_param(&good, "aud"), "invalid_request"),
            (
                good.replace(
                    "scope=launch%2Fpatient+patient%2F*.rs",
                    "scope=system%2F*.rs",
                ),
                "invalid_scope",
            ),
        ];
        for (url, error) in cases {
            let answer = callback(&browser.get(&url).await);
            assert_eq!(
                answer.get("error").map(String::as_str),
                Some(error),
                "{url}"
            );
            assert!(!answer.contains_key("code"));
        }

        // A parameter sent twice is refused on Portico's page.
        let twice = browser.get(&format!("{good}&scope=openid")).await;
        assert_eq!(twice.status, 400);
        assert!(twice.location.is_none());
    })
    .await;
}

fn strip_param(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').unwrap();
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| pair.split('=').next() != Some(name))
        .collect();
    format!("{base}?{}", kept.join("&"))
}

#[tokio::test]
async fn codes_are_single_use_bound_and_pkce_checked() {
    SignInApp::each("code_exchange_errors", async |app: SignInApp| {
        let scope = "launch/patient patient/*.rs";
        let fresh_code = async |app: &SignInApp| {
            let (url, _, verifier) = app.authorize_url("smart-app", scope, &[]);
            let mut browser = Browser::new(app);
            let answer = sign_in(&mut browser, &url, "dr.house", Some("1"), &[]).await;
            (answer["code"].clone(), verifier)
        };
        let exchange = async |code: &str, extra: &[(&str, &str)]| {
            let mut form = vec![
                ("grant_type", "authorization_code"),
                ("code", code),
                ("client_id", "smart-app"),
                ("redirect_uri", REDIRECT),
            ];
            for (name, value) in extra {
                form.retain(|(n, _)| n != name);
                form.push((name, value));
            }
            app.token_form(&form).await
        };

        // 8: an invalid code.
        let (status, headers, body) =
            exchange("not-a-code", &[("code_verifier", &"v".repeat(43))]).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        assert_eq!(headers["cache-control"], "no-store");
        // 9: an unknown client.
        let (status, _, body) = exchange("x", &[("client_id", "BAD_CLIENT_ID")]).await;
        assert!(matches!(status, 400 | 401), "{status}");
        assert_eq!(body["error"], "invalid_client");
        // 15: the password grant does not exist.
        let (status, _, body) = app
            .token_form(&[
                ("grant_type", "password"),
                ("username", "dr.house"),
                ("password", PASSWORD),
            ])
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("unsupported_grant_type"))
        );

        // 13: PKCE verifier missing, blank, wrong, or equal to the challenge. Each presentation
        // spends the code, so each case gets a new one.
        for verifier_case in ["missing", "blank", "wrong", "challenge"] {
            let (code, verifier) = fresh_code(&app).await;
            let challenge = PkceCodeChallenge::from_code_verifier_sha256(&verifier);
            let presented = match verifier_case {
                "missing" => None,
                "blank" => Some(String::new()),
                "wrong" => Some(PkceCodeVerifier::new("w".repeat(64)).secret().clone()),
                _ => Some(challenge.as_str().to_owned()),
            };
            let extra: Vec<(&str, &str)> = presented
                .as_deref()
                .map(|v| vec![("code_verifier", v)])
                .unwrap_or_default();
            let (status, _, body) = exchange(&code, &extra).await;
            assert_eq!(status, 400, "{verifier_case}: {body}");
            assert!(
                matches!(
                    body["error"].as_str(),
                    Some("invalid_grant" | "invalid_request")
                ),
                "{verifier_case}: {body}"
            );
        }

        // 12: another client, another redirect_uri.
        for (name, value) in [
            ("client_id", "other-app"),
            ("redirect_uri", "http://127.0.0.1:9/other"),
        ] {
            let (code, verifier) = fresh_code(&app).await;
            let (status, _, body) = exchange(
                &code,
                &[(name, value), ("code_verifier", verifier.secret())],
            )
            .await;
            assert_eq!(
                (status, body["error"].as_str()),
                (400, Some("invalid_grant")),
                "{name}"
            );
        }

        // 10: a code used twice: the second use fails and the first use's token is revoked.
        let (code, verifier) = fresh_code(&app).await;
        let (status, _, first) = exchange(&code, &[("code_verifier", verifier.secret())]).await;
        assert_eq!(status, 200, "{first}");
        let access = first["access_token"].as_str().unwrap();
        assert_eq!(app.read(access, "Patient/1").await, 200);
        let (status, _, body) = exchange(&code, &[("code_verifier", verifier.secret())]).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        assert_eq!(app.read(access, "Patient/1").await, 401);

        // 11: a code past its 60 seconds.
        let (code, verifier) = fresh_code(&app).await;
        age_codes(&app.state_url).await;
        let (status, _, body) = exchange(&code, &[("code_verifier", verifier.secret())]).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "{body}"
        );
    })
    .await;
}

/// Moves every code's expiry into the past, as if two minutes went by.
async fn age_codes(state_url: &str) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut connection = sqlx::AnyConnection::connect(state_url).await.unwrap();
    sqlx::query("UPDATE authorization_code SET expires_at = expires_at - 120")
        .execute(&mut connection)
        .await
        .unwrap();
}

#[tokio::test]
async fn refresh_tokens_are_bound_narrowing_and_revocable() {
    SignInApp::each("code_refresh", async |app: SignInApp| {
        let scope = "launch/patient patient/*.rs online_access";
        let (url, _, verifier) = app.authorize_url("smart-app", scope, &[]);
        let mut browser = Browser::new(&app);
        let answer = sign_in(&mut browser, &url, "dr.house", Some("1"), &[]).await;
        let tokens = app.exchange("smart-app", &answer["code"], verifier).await;
        let refresh = tokens
            .refresh_token()
            .expect("online_access")
            .secret()
            .clone();
        let refresh_form = |token: &str, client: &str, scope: Option<&str>| {
            let mut form = vec![
                ("grant_type".to_owned(), "refresh_token".to_owned()),
                ("refresh_token".to_owned(), token.to_owned()),
            ];
            // A public client may leave client_id out (SMART's JS client does by default).
            if !client.is_empty() {
                form.push(("client_id".to_owned(), client.to_owned()));
            }
            if let Some(scope) = scope {
                form.push(("scope".to_owned(), scope.to_owned()));
            }
            form
        };
        let send = async |form: Vec<(String, String)>| {
            let form: Vec<(&str, &str)> =
                form.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            app.token_form(&form).await
        };

        // 16: a made-up refresh token.
        let (status, _, body) = send(refresh_form("f0e1d2c3-made-up", "smart-app", None)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        // 18: a wider scope is refused; a narrower one is granted (and rotates).
        let (status, _, body) = send(refresh_form(
            &refresh,
            "smart-app",
            Some("patient/*.cruds user/*.rs"),
        ))
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_scope"))
        );
        let (status, _, body) = send(refresh_form(
            &refresh,
            "",
            Some("patient/Patient.rs online_access"),
        ))
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["scope"], "patient/Patient.rs online_access");
        let narrowed = body["access_token"].as_str().unwrap().to_owned();
        assert_eq!(app.read(&narrowed, "Patient/1").await, 200);
        assert_eq!(app.read(&narrowed, "Observation?patient=1").await, 403);
        let refresh = body["refresh_token"].as_str().unwrap().to_owned();

        // 17: another client presenting it: refused, and the authorization ends (it leaked).
        let (status, _, body) = send(refresh_form(&refresh, "other-app", None)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        assert_eq!(app.read(&narrowed, "Patient/1").await, 401);

        // 20: the app (for its user) revokes a refresh token: its access tokens stop at once and the
        // refresh fails.
        let (url, _, verifier) = app.authorize_url("smart-app", scope, &[]);
        let answer = sign_in(&mut browser, &url, "dr.house", Some("1"), &[]).await;
        let tokens = app.exchange("smart-app", &answer["code"], verifier).await;
        let access = tokens.access_token().secret().clone();
        let refresh = tokens.refresh_token().unwrap().secret().clone();
        let revoked = no_redirects()
            .post(format!("{}/auth/revoke", app.root()))
            .form(&[
                ("token", refresh.as_str()),
                ("client_id", "smart-app"),
                ("token_type_hint", "refresh_token"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(revoked.status(), 200);
        assert_eq!(app.read(&access, "Patient/1").await, 401);
        let (status, _, _) = send(refresh_form(&refresh, "smart-app", None)).await;
        assert_eq!(status, 400);
    })
    .await;
}

#[tokio::test]
async fn sign_in_pages_are_bound_to_their_browser_rate_limited_and_locked_down() {
    SignInApp::each("code_pages", async |app: SignInApp| {
        let (url, _, _) = app.authorize_url("smart-app", "launch/patient patient/*.rs", &[]);
        let mut browser = Browser::new(&app);
        let start = browser.get(&url).await;
        assert_eq!(start.status, 303);
        let cookie = start.headers["set-cookie"].to_str().unwrap().to_owned();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
            "{cookie}"
        );
        assert!(
            cookie.contains("Path=/auth") && !cookie.contains("Secure"),
            "{cookie}"
        );
        let page = browser.follow(start).await;
        let policy = page.headers["content-security-policy"].to_str().unwrap();
        assert!(
            policy.contains("frame-ancestors 'none'") && policy.contains("default-src 'none'"),
            "{policy}"
        );
        assert_eq!(page.headers["x-frame-options"], "DENY");
        assert_eq!(page.headers["cache-control"], "no-store");
        let (tx, csrf) = (page.hidden("tx"), page.hidden("csrf"));

        // CSRF: a form without the page's token, or from a browser without the cookie.
        let forged = browser
            .post(
                "/auth/login",
                &[
                    ("tx", &tx),
                    ("csrf", "guess"),
                    ("username", "dr.house"),
                    ("password", PASSWORD),
                ],
            )
            .await;
        assert_eq!(forged.status, 403);
        let mut elsewhere = Browser::new(&app);
        let stolen = elsewhere
            .post(
                "/auth/login",
                &[
                    ("tx", &tx),
                    ("csrf", &csrf),
                    ("username", "dr.house"),
                    ("password", PASSWORD),
                ],
            )
            .await;
        assert_eq!(stolen.status, 403);
        assert!(
            !stolen.headers.contains_key("set-cookie"),
            "no session for a stolen transaction"
        );

        // Wrong passwords: 401 on the page, then the account is locked for the window, even for
        // the right password.
        for _ in 0..5 {
            let wrong = browser
                .post(
                    "/auth/login",
                    &[
                        ("tx", &tx),
                        ("csrf", &csrf),
                        ("username", "dr.house"),
                        ("password", "wrong password!"),
                    ],
                )
                .await;
            assert_eq!(wrong.status, 401);
            assert!(wrong.body.contains("Wrong user name or password"));
        }
        let locked = browser
            .post(
                "/auth/login",
                &[
                    ("tx", &tx),
                    ("csrf", &csrf),
                    ("username", "dr.house"),
                    ("password", PASSWORD),
                ],
            )
            .await;
        assert_eq!(locked.status, 429);
        // Another account is not locked by it (and the address is under its own limit).
        let page = browser.open(&url).await;
        let next = browser.login(&page, "pat.one", PASSWORD).await;
        assert!(next.body.contains("id=\"allow\""), "{}", next.body);

        // An administrator may not authorize an app to read patient data.
        let mut admin = Browser::new(&app);
        let page = admin.open(&url).await;
        let refused = admin.login(&page, "admin", PASSWORD).await;
        assert_eq!(refused.status, 403);
        // Only the audit trail: an admin's review tool signs in like any app.
        let (url, _, verifier) = app.authorize_url("smart-app", "openid user/AuditEvent.rs", &[]);
        let answer = sign_in(&mut admin, &url, "admin", None, &[]).await;
        let tokens = app.exchange("smart-app", &answer["code"], verifier).await;
        let access = tokens.access_token().secret();
        assert_eq!(app.read(access, "AuditEvent?_count=5").await, 200);
        assert_eq!(app.read(access, "Patient/1").await, 403);
    })
    .await;
}

#[tokio::test]
async fn ehr_launch_binds_the_patient_and_the_client() {
    SignInApp::each("code_ehr_launch", async |app: SignInApp| {
        let launch = async |user: &str, form: &[(&str, &str)]| {
            let response = no_redirects()
                .post(format!("{}/auth/launch", app.root()))
                .basic_auth(user, Some(PASSWORD))
                .form(form)
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.json::<Json>().await.unwrap(),
            )
        };
        let (status, body) =
            launch("dr.house", &[("client_id", "smart-app"), ("patient", "2")]).await;
        assert_eq!(status, 401, "only administrators launch: {body}");
        let (status, body) = launch(
            "admin",
            &[("client_id", "smart-app"), ("patient", "999999")],
        )
        .await;
        assert_eq!(status, 400, "{body}");
        let (status, body) = launch(
            "admin",
            &[
                ("client_id", "smart-app"),
                ("patient", "2"),
                ("encounter", "5"),
            ],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let value = body["launch"].as_str().unwrap().to_owned();

        // Another client cannot use it; the client it was made for can, once.
        let (url, _, _) = app.authorize_url(
            "other-app",
            "launch openid fhirUser patient/*.rs",
            &[("launch", &value)],
        );
        let mut browser = Browser::new(&app);
        assert_eq!(
            callback(&browser.get(&url).await)["error"],
            "invalid_request"
        );
        let (url, _, verifier) = app.authorize_url(
            "smart-app",
            "launch openid fhirUser patient/*.rs",
            &[("launch", &value)],
        );
        let page = browser.open(&url).await;
        let page = browser.login(&page, "dr.house", PASSWORD).await;
        assert!(
            !page.body.contains("name=\"patient\""),
            "no picker in an EHR launch"
        );
        assert!(page.body.contains("id=\"allow\""), "{}", page.body);
        let answer = callback(&browser.consent(&page, "allow", &[]).await);
        let (status, _, body) = app
            .token_form(&[
                ("grant_type", "authorization_code"),
                ("code", &answer["code"]),
                ("redirect_uri", REDIRECT),
                ("client_id", "smart-app"),
                ("code_verifier", verifier.secret()),
            ])
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["patient"], "2");
        assert_eq!(body["encounter"], "5");
        assert_eq!(body["need_patient_banner"], true);
        let access = body["access_token"].as_str().unwrap();
        assert_eq!(app.read(access, "Patient/2").await, 200);
        assert_eq!(app.read(access, "Patient/1").await, 404);
        let (url, _, _) =
            app.authorize_url("smart-app", "launch patient/*.rs", &[("launch", &value)]);
        assert_eq!(
            callback(&browser.get(&url).await)["error"],
            "invalid_request",
            "used once"
        );
    })
    .await;
}
