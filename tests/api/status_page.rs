//! Signing in to the operator's status page against a real Portico: a browser without
//! credentials is sent to the page's own form, which takes the admin accounts of the SMART
//! sign-in (CSRF-bound, administrators only), starts a session whose cookie opens the page and
//! nothing else, and signing out ends it. Scripts keep HTTP Basic.

use portico::state::users::Role;
use reqwest::header::HeaderMap;

use crate::subscriptions::start_with;
use crate::support::{self, Backend};

/// The `name=value` a response sets for `name`, with the rest of its Set-Cookie line.
fn set_cookie(headers: &HeaderMap, name: &str) -> Option<(String, String)> {
    headers.get_all("set-cookie").iter().find_map(|line| {
        let line = line.to_str().unwrap();
        let (pair, attributes) = line.split_once(';').unwrap_or((line, ""));
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| (value.to_owned(), attributes.trim().to_owned()))
    })
}

/// The value of the page form's hidden `csrf` input.
fn form_token(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let at = html
        .find(marker)
        .unwrap_or_else(|| panic!("no form in {html}"))
        + marker.len();
    html[at..at + html[at..].find('"').unwrap()].to_owned()
}

#[tokio::test]
async fn administrators_sign_in_to_the_status_page_with_its_form_and_out_again() {
    let db_url = support::seed(Backend::Sqlite, "status_page_sign_in").await;
    let app = start_with(&db_url, None, false).await;
    let root = app.base.trim_end_matches("/fhir").to_owned();
    app.store
        .add_user("ops", "a long admin password", Role::Admin, None)
        .await
        .unwrap();
    app.store
        .add_user(
            "dr-who",
            "a long clinician password",
            Role::Clinician,
            Some("Practitioner/1"),
        )
        .await
        .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = |path: &str| format!("{root}{path}");

    // A browser without credentials is sent to the form (relative, so a proxy's prefix holds).
    let anonymous = http.get(url("/status")).send().await.unwrap();
    assert_eq!(anonymous.status(), 303);
    assert_eq!(anonymous.headers()["location"], "status/sign-in");
    // Scripts still get a 401 OperationOutcome, never a page.
    let fragment = http.get(url("/status/fragment")).send().await.unwrap();
    assert_eq!(fragment.status(), 401);

    let form = http.get(url("/status/sign-in")).send().await.unwrap();
    assert_eq!(form.status(), 200);
    let policy = form.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("form-action 'self'"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    let (token_cookie, attributes) =
        set_cookie(form.headers(), "portico_status_form").expect("the form's token cookie");
    assert_eq!(
        attributes, "Path=/status; HttpOnly; SameSite=Lax; Max-Age=900",
        "scoped to the page"
    );
    let html = form.text().await.unwrap();
    assert_eq!(form_token(&html), token_cookie, "double submit");
    assert!(html.contains("action=\"sign-in\""), "{html}");

    let post = |token: String, username: &'static str, password: &'static str| {
        http.post(url("/status/sign-in"))
            .header("cookie", format!("portico_status_form={token_cookie}"))
            .form(&[
                ("csrf", token.as_str()),
                ("username", username),
                ("password", password),
            ])
            .send()
    };
    // A form from elsewhere (another token) signs nobody in, even with the right password.
    let forged = post("not-the-token".into(), "ops", "a long admin password")
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert!(set_cookie(forged.headers(), "portico_status").is_none());
    assert!(
        forged
            .text()
            .await
            .unwrap()
            .contains("The form had expired")
    );
    let wrong = post(token_cookie.clone(), "ops", "not the password")
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(set_cookie(wrong.headers(), "portico_status").is_none());
    assert!(
        wrong
            .text()
            .await
            .unwrap()
            .contains("Wrong user name or password.")
    );
    let clinician = post(token_cookie.clone(), "dr-who", "a long clinician password")
        .await
        .unwrap();
    assert_eq!(clinician.status(), 403);
    assert!(set_cookie(clinician.headers(), "portico_status").is_none());
    assert!(
        clinician
            .text()
            .await
            .unwrap()
            .contains("Only administrators see the status page.")
    );

    let signed_in = post(token_cookie.clone(), "ops", "a long admin password")
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    assert_eq!(signed_in.headers()["location"], "../status");
    let (session, attributes) =
        set_cookie(signed_in.headers(), "portico_status").expect("a session cookie");
    assert!(session.len() >= 32, "a random session: {session}");
    assert_eq!(
        attributes, "Path=/status; HttpOnly; SameSite=Lax; Max-Age=28800",
        "the session opens the status page only, for a working day"
    );
    let (_, cleared) = set_cookie(signed_in.headers(), "portico_status_form").unwrap();
    assert!(
        cleared.ends_with("Max-Age=0"),
        "the used token goes: {cleared}"
    );
    let with_session = |path: &str| {
        http.get(url(path))
            .header("cookie", format!("portico_status={session}"))
            .send()
    };

    let page = with_session("/status").await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("<span id=\"viewer\">ops</span>"), "{html}");
    assert!(html.contains("action=\"status/sign-out\""), "{html}");
    assert!(html.contains("<div class=\"banner ok\">"), "{html}");
    assert_eq!(
        with_session("/status/fragment").await.unwrap().status(),
        200
    );
    // The page's session is no credential for the JSON views (nor would a browser send it).
    for path in ["/status.json", "/admin/subscriptions"] {
        assert_eq!(with_session(path).await.unwrap().status(), 401, "{path}");
    }

    let signed_out = http
        .post(url("/status/sign-out"))
        .header("cookie", format!("portico_status={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status(), 303);
    assert_eq!(signed_out.headers()["location"], "sign-in");
    let (_, cleared) = set_cookie(signed_out.headers(), "portico_status").unwrap();
    assert!(cleared.ends_with("Max-Age=0"), "{cleared}");
    // The ended session opens nothing, even when a copy of the cookie is replayed.
    let replayed = with_session("/status").await.unwrap();
    assert_eq!(replayed.status(), 303);
    assert_eq!(replayed.headers()["location"], "status/sign-in");
    assert_eq!(
        with_session("/status/fragment").await.unwrap().status(),
        401
    );

    // Scripts keep HTTP Basic; they get no sign-out button.
    let basic = http
        .get(url("/status"))
        .basic_auth("ops", Some("a long admin password"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 200);
    let html = basic.text().await.unwrap();
    assert!(!html.contains("sign-out"), "{html}");
    let refused = http
        .get(url("/status"))
        .basic_auth("ops", Some("a wrong password"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        401,
        "bad credentials are refused, not redirected"
    );
}
