"""fhirclient (PyPI, smart-on-fhir/client-py) making a SMART standalone launch against a running
Portico: the client builds the authorize URL (with its PKCE challenge), this script plays the
user's browser with requests (login, patient picker, consent: each form's hidden tx and csrf
inputs are sent back, the cookie stays in the session), hands the redirect to the client's
handle_callback, and the client reads its patient and refreshes its token. Prints what it saw as
one JSON object, without any token; the Rust test (tests/clients.rs) checks it.

Usage: python fhirclient_launch.py < settings.json, with
  {"base": FHIR_BASE, "client_id": ..., "redirect_uri": ..., "scope": ...,
   "username": ..., "password": ..., "pick": PATIENT_ID or null}
"""

import json
import sys
from html.parser import HTMLParser
from urllib.parse import parse_qs, urljoin, urlsplit

import requests
from fhirclient import client
from fhirclient.models.patient import Patient


class Page(HTMLParser):
    """A page's forms (action, inputs, buttons with an id) and the ids of its elements."""

    def __init__(self, html):
        super().__init__()
        self.forms = []
        self.ids = set()
        self._form = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add((tag, attrs["id"]))
        if tag == "form":
            self._form = {"action": attrs.get("action") or "", "inputs": [], "buttons": {}}
            self.forms.append(self._form)
        elif self._form is not None and tag == "input":
            self._form["inputs"].append(attrs)
        elif self._form is not None and tag == "button" and attrs.get("id"):
            self._form["buttons"][attrs["id"]] = attrs

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None

    def has(self, tag, id_):
        return (tag, id_) in self.ids

    def named(self, name):
        return [i for f in self.forms for i in f["inputs"] if i.get("name") == name]

    def submit(self, button_id, fields):
        """The form holding button#button_id: its action and what a click on it sends (the
        form's hidden inputs, `fields`, and the button's own name and value if it has a name)."""
        for form in self.forms:
            button = form["buttons"].get(button_id)
            if button is None:
                continue
            sent = [
                (i["name"], i.get("value", ""))
                for i in form["inputs"]
                if i.get("type") == "hidden" and i.get("name")
            ]
            sent += fields
            if button.get("name"):
                sent.append((button["name"], button.get("value", "")))
            return form["action"], sent
        raise SystemExit(f"no form with button#{button_id} on the page")


def main():
    settings = json.load(sys.stdin)
    smart = client.FHIRClient(
        settings={
            "app_id": settings["client_id"],
            "api_base": settings["base"],
            "redirect_uri": settings["redirect_uri"],
            # fhirclient adds launch/patient itself: no patient is known yet.
            "scope": settings["scope"],
        }
    )
    authorize_url = smart.authorize_url
    browser = requests.Session()
    pages = []
    consent_scopes = None
    response = browser.get(authorize_url, allow_redirects=False)
    for _ in range(12):
        if response.status_code in (302, 303):
            location = urljoin(response.url, response.headers["Location"])
            if location.startswith(settings["redirect_uri"]):
                break
            response = browser.get(location, allow_redirects=False)
            continue
        if response.status_code != 200:
            raise SystemExit(
                f"{response.url} answered {response.status_code}: {response.text[:2000]}"
            )
        page = Page(response.text)
        if page.has("input", "username"):
            pages.append("login")
            action, fields = page.submit(
                "login",
                [("username", settings["username"]), ("password", settings["password"])],
            )
        elif page.named("patient") or page.has("button", "select"):
            pages.append("picker")
            offered = [i.get("value") for i in page.named("patient")]
            if settings["pick"] not in offered:
                raise SystemExit(f"the picker offers {offered}, not {settings['pick']}")
            action, fields = page.submit("select", [("patient", settings["pick"])])
        elif page.has("button", "allow"):
            pages.append("consent")
            boxes = page.named("scope")
            consent_scopes = [b.get("value") for b in boxes]
            action, fields = page.submit(
                "allow", [("scope", b.get("value")) for b in boxes if "checked" in b]
            )
        else:
            raise SystemExit(f"an unknown page at {response.url}:\n{response.text[:2000]}")
        response = browser.post(
            urljoin(response.url, action), data=fields, allow_redirects=False
        )
    else:
        raise SystemExit(f"no redirect to the app; stopped at {response.url}")

    callback = urljoin(response.url, response.headers["Location"])
    callback_query = parse_qs(urlsplit(callback).query)
    smart.handle_callback(callback)
    context = smart.launch_context or {}
    patient = smart.patient
    seen = {
        "authorize": {
            k: v[0]
            for k, v in parse_qs(urlsplit(authorize_url).query).items()
            if k != "code_challenge"
        },
        "has_code_challenge": "code_challenge" in parse_qs(urlsplit(authorize_url).query),
        "pages": pages,
        "consent_scopes": consent_scopes,
        "callback": {k: v[0] for k, v in callback_query.items() if k != "code"},
        "context": {
            "scope": context.get("scope"),
            "patient": context.get("patient"),
            "token_type": context.get("token_type"),
            "has_id_token": "id_token" in context,
        },
        "patient_id": smart.patient_id,
        "patient": patient.as_json() if patient else None,
    }
    # The token's limits: another patient's record is refused.
    other = browser_read(smart, settings.get("probe"))
    if other is not None:
        seen["probe"] = other
    # A refresh with the refresh token (offline_access) gives a new access token for the same
    # patient; fhirclient sends client_id with it.
    before = smart.server.auth.access_token
    seen["reauthorized"] = smart.reauthorize()
    seen["new_access_token"] = smart.server.auth.access_token != before
    seen["patient_after_refresh"] = Patient.read(smart.patient_id, smart.server).id
    print(json.dumps(seen))


def browser_read(smart, patient_id):
    """Reads Patient/<patient_id> with the client's token: the HTTP status."""
    if not patient_id:
        return None
    url = urljoin(smart.server.base_uri, f"Patient/{patient_id}")
    headers = smart.server.auth.signed_headers({"Accept": "application/fhir+json"})
    return {"status": requests.get(url, headers=headers).status_code}


if __name__ == "__main__":
    main()
