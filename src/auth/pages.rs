//! The authorization server's HTML pages: sign-in, patient picker, consent, and the error page.
//! Plain server-rendered forms (no script, so the strict CSP of `api::sign_in` holds); every
//! value is HTML-escaped; every form carries the transaction id and its CSRF token.

use crate::auth::endpoints;

/// Text made safe for HTML element content and double-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#222}\
h1{font-size:1.4rem}label{display:block;margin:.6rem 0}input[type=text],input[type=password]{width:100%;padding:.4rem}\
button{margin:.8rem .6rem 0 0;padding:.5rem 1.2rem}.error{color:#a00}.note{color:#555;font-size:.9rem}\
ul{list-style:none;padding:0}li{margin:.4rem 0}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{title} - Portico</title>\
         <style>{STYLE}</style></head><body><h1>{title}</h1>{body}</body></html>",
        title = escape(title),
    )
}

fn hidden(tx: &str, csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"tx\" value=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape(tx),
        escape(csrf)
    )
}

/// The sign-in form for `app` (the client's registered name).
pub fn login(tx: &str, csrf: &str, app: &str, error: Option<&str>) -> String {
    let error = alert(error);
    page(
        "Sign in",
        &format!(
            "<p><strong>{app}</strong> asks to use your records on this server.</p>{error}\
             <form method=\"post\" action=\"{action}\">{hidden}{CREDENTIALS}</form>",
            app = escape(app),
            action = endpoints::LOGIN,
            hidden = hidden(tx, csrf),
        ),
    )
}

/// A form's error message, announced to screen readers; nothing without one.
fn alert(error: Option<&str>) -> String {
    error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default()
}

/// A sign-in form's fields and button, the same on every form that asks for a password.
const CREDENTIALS: &str = "<label>User name <input type=\"text\" id=\"username\" name=\"username\" autocomplete=\"username\" required autofocus></label>\
    <label>Password <input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required></label>\
    <button type=\"submit\" id=\"login\">Sign in</button>";

/// The status page's sign-in form: administrators, with the accounts the SMART sign-in uses. It
/// posts to itself (`/status/sign-in`, relative so a path prefix of a proxy holds).
pub fn operator_sign_in(csrf: &str, error: Option<&str>) -> String {
    let error = alert(error);
    page(
        "Portico status",
        &format!(
            "<p>Sign in as an administrator to see the status of this server.</p>{error}\
             <form method=\"post\" action=\"sign-in\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             {CREDENTIALS}</form>",
            csrf = escape(csrf),
        ),
    )
}

/// One row of the patient picker.
pub struct PatientChoice {
    pub id: String,
    pub label: String,
}

/// The patient picker: a name filter and the patients it found.
pub fn picker(tx: &str, csrf: &str, app: &str, query: &str, patients: &[PatientChoice]) -> String {
    let rows: String = patients
        .iter()
        .enumerate()
        .map(|(at, p)| {
            format!(
                "<li><label><input type=\"radio\" name=\"patient\" value=\"{id}\"{checked} required> {label}</label></li>",
                id = escape(&p.id),
                label = escape(&p.label),
                checked = if at == 0 { " checked" } else { "" },
            )
        })
        .collect();
    let list = if patients.is_empty() {
        "<p>No patient matches.</p>".to_owned()
    } else {
        format!(
            "<form method=\"post\" action=\"{action}\">{hidden}<ul>{rows}</ul>\
             <button type=\"submit\" id=\"select\">Continue with this patient</button></form>",
            action = endpoints::PICK,
            hidden = hidden(tx, csrf),
        )
    };
    page(
        "Choose a patient",
        &format!(
            "<p>Which patient's record should <strong>{app}</strong> open?</p>\
             <form method=\"get\" action=\"{action}\"><input type=\"hidden\" name=\"tx\" value=\"{tx}\">\
             <label>Name <input type=\"text\" id=\"q\" name=\"q\" value=\"{query}\"></label>\
             <button type=\"submit\" id=\"search\">Search</button></form>{list}",
            app = escape(app),
            action = endpoints::PICK,
            tx = escape(tx),
            query = escape(query),
        ),
    )
}

/// One scope on the consent page: its value and its plain-words meaning.
pub struct ScopeChoice {
    pub scope: String,
    pub description: String,
}

/// The consent page: what the app asks for, each scope a checkbox the user may untick.
pub fn consent(
    tx: &str,
    csrf: &str,
    app: &str,
    user: &str,
    patient: Option<&str>,
    scopes: &[ScopeChoice],
    offline: bool,
) -> String {
    let rows: String = scopes
        .iter()
        .map(|s| {
            format!(
                "<li><label><input type=\"checkbox\" name=\"scope\" value=\"{value}\" checked> {text}</label></li>",
                value = escape(&s.scope),
                text = escape(&s.description),
            )
        })
        .collect();
    let patient = patient
        .map(|p| format!("<p>Patient: <strong>{}</strong></p>", escape(p)))
        .unwrap_or_default();
    let offline = if offline {
        "<p class=\"note\">This app asks for offline access: it can keep reading after you close \
         it, until you or an administrator revoke it.</p>"
    } else {
        ""
    };
    page(
        "Allow access?",
        &format!(
            "<p>Signed in as <strong>{user}</strong>. <strong>{app}</strong> asks to:</p>{patient}\
             <form method=\"post\" action=\"{action}\">{hidden}<ul>{rows}</ul>{offline}\
             <p class=\"note\">Untick what you do not want to share.</p>\
             <button type=\"submit\" id=\"allow\" name=\"decision\" value=\"allow\">Allow</button>\
             <button type=\"submit\" id=\"deny\" name=\"decision\" value=\"deny\" formnovalidate>Deny</button></form>",
            user = escape(user),
            app = escape(app),
            action = endpoints::CONSENT,
            hidden = hidden(tx, csrf),
        ),
    )
}

/// A page that ends the sign-in with a message (never a redirect to an untrusted URI).
pub fn message(title: &str, text: &str) -> String {
    page(title, &format!("<p>{}</p>", escape(text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_cannot_break_out_of_the_markup() {
        let html = login("t\"x", "c<s>", "<script>alert(1)</script>", Some("a & b"));
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("value=\"t&quot;x\""));
        assert!(html.contains("a &amp; b"));
        let html = picker(
            "t",
            "c",
            "app",
            "\"><img src=x>",
            &[PatientChoice {
                id: "1\"".into(),
                label: "O'Brien <b>".into(),
            }],
        );
        assert!(!html.contains("<img"));
        assert!(html.contains("O&#39;Brien &lt;b&gt;"));
    }
}
