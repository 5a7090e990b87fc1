"""Seeds the demo realm into a running Keycloak through its Admin REST API.

Usage: demo_keycloak.py BASE_URL ADMIN_PASSWORD CLIENT_SECRET

The realm `demo` gets a confidential client `keysync` whose service account holds the
realm-management roles keysync needs, nested groups, 300 users (some disabled, some
without email, a few with unicode names, a custom `department` attribute), deterministic
so every demo shows the same plan.
"""

import json
import random
import sys
import unicodedata
import urllib.parse
import urllib.request

BASE, ADMIN_PASSWORD, CLIENT_SECRET = sys.argv[1:4]
REALM = "demo"

FIRST = ["Alice", "Bob", "Chloé", "David", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas",
         "Kai", "Lena", "Mateo", "Noor", "Olga", "Pablo", "Quinn", "Rosa", "Sven", "Zoë"]
LAST = ["Smith", "Jones", "Müller", "García", "Rossi", "Novak", "Kim", "Dubois", "Silva",
        "Ångström", "Nakamura", "Okafor", "Larsen", "Costa", "Weber"]
GROUPS = ["/staff/engineering/backend", "/staff/engineering/frontend", "/staff/engineering/sre",
          "/staff/sales/emea", "/staff/sales/americas", "/staff/support", "/contractors"]


def request(method, path, token=None, body=None, form=None):
    headers = {}
    data = None
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    req = urllib.request.Request(BASE + path, data=data, headers=headers, method=method)
    with urllib.request.urlopen(req, timeout=120) as response:
        text = response.read().decode()
        return json.loads(text) if text.strip() else None


def group_tree(paths):
    tree = {}
    for path in paths:
        node = tree
        for part in path.strip("/").split("/"):
            node = node.setdefault(part, {})

    def render(node, parent):
        return [{"name": name, "path": f"{parent}/{name}", "subGroups": render(child, f"{parent}/{name}")}
                for name, child in sorted(node.items())]
    return render(tree, "")


def users():
    rng = random.Random(7)
    seen = set()
    result = []
    while len(result) < 300:
        first, last = rng.choice(FIRST), rng.choice(LAST)
        if not result:
            first, last = "Alice", "Smith"  # the demo's Jira already has alice.smith
        username = f"{first}.{last}".lower()
        if username in seen:
            username = f"{username}{len(result)}"
        seen.add(username)
        index = len(result)
        ascii_name = unicodedata.normalize("NFKD", username).encode("ascii", "ignore").decode()
        user = {
            "username": username,
            "firstName": first,
            "lastName": last,
            "enabled": index % 20 != 7,  # 15 disabled users
            "emailVerified": True,
            "attributes": {"department": [rng.choice(["R&D", "Sales", "Support", "Ops"])]},
            "groups": sorted({rng.choice(GROUPS) for _ in range(rng.randint(1, 2))}),
        }
        if index % 50 != 13:  # 6 users without email
            user["email"] = f"{ascii_name}@example.org"
        result.append(user)
    return result


def main():
    token = request("POST", "/realms/master/protocol/openid-connect/token", form={
        "grant_type": "password", "client_id": "admin-cli",
        "username": "admin", "password": ADMIN_PASSWORD})["access_token"]
    request("POST", "/admin/realms", token, {
        "realm": REALM,
        "enabled": True,
        "clients": [{
            "clientId": "keysync", "enabled": True, "protocol": "openid-connect",
            "publicClient": False, "clientAuthenticatorType": "client-secret",
            "secret": CLIENT_SECRET, "serviceAccountsEnabled": True,
            "standardFlowEnabled": False, "directAccessGrantsEnabled": False}],
        "users": [{
            "username": "service-account-keysync", "enabled": True,
            "serviceAccountClientId": "keysync",
            "clientRoles": {"realm-management": ["view-users", "query-groups", "view-events"]}}],
        "groups": group_tree(GROUPS),
    })
    profile = request("GET", f"/admin/realms/{REALM}/users/profile", token)
    profile["unmanagedAttributePolicy"] = "ADMIN_EDIT"
    request("PUT", f"/admin/realms/{REALM}/users/profile", token, profile)
    seeded = users()
    request("POST", f"/admin/realms/{REALM}/partialImport", token,
            {"ifResourceExists": "FAIL", "users": seeded})
    disabled = sum(1 for user in seeded if not user["enabled"])
    print(f"demo realm: {len(seeded)} users ({disabled} disabled), {len(GROUPS)} leaf groups")


if __name__ == "__main__":
    main()
