"""The export the fetcher benchmark compares keysync with: the whole directory of a
realm, read the way people script it today with python-keycloak (pinned by the bench):
all users, the group tree, and the members of every group.

Reads KC_URL, KC_REALM, KC_CLIENT_ID and KC_CLIENT_SECRET from the environment and
prints one JSON line: {"users": N, "groups": N, "memberships": N, "seconds": S}, the
seconds being those of the export itself (the client's login included, the interpreter's
start and imports not).
"""

import json
import os
import time

from keycloak import KeycloakAdmin


def main() -> None:
    started = time.monotonic()
    admin = KeycloakAdmin(
        server_url=os.environ["KC_URL"],
        realm_name=os.environ["KC_REALM"],
        user_realm_name=os.environ["KC_REALM"],
        client_id=os.environ["KC_CLIENT_ID"],
        client_secret_key=os.environ["KC_CLIENT_SECRET"],
        timeout=300,
    )
    users = admin.get_users({})
    tree = admin.get_groups(full_hierarchy=True)
    groups = []
    stack = list(tree)
    while stack:
        group = stack.pop()
        groups.append(group)
        stack.extend(group.get("subGroups") or [])
    members = {group["id"]: admin.get_group_members(group["id"]) for group in groups}
    seconds = time.monotonic() - started
    print(
        json.dumps(
            {
                "users": len(users),
                "groups": len(groups),
                "memberships": sum(len(listed) for listed in members.values()),
                "seconds": seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
