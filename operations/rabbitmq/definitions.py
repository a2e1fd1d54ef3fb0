"""The definitions file (vhosts, users, permissions, policies), rendered from the model:
pure, so the same secret always renders the same file and a second run changes nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from plinth.model import RabbitmqSettings


def password_hash(user: str, password: str) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256``: base64(salt + sha256(salt + password)).

    The 4-byte salt is derived from the password and the user (not random), so the same
    secret always renders the same definitions file and a second run changes nothing.
    """
    salt = hmac.new(password.encode(), f"plinth-rabbitmq:{user}".encode(), "sha256").digest()[:4]
    digest = hashlib.sha256(salt + password.encode()).digest()
    return base64.b64encode(salt + digest).decode()


def render_definitions(settings: RabbitmqSettings, admin_password: str) -> str:
    """The definitions file (``import_definitions`` format) for the model's settings.

    Certificate users get an empty password hash: they cannot log in with a password.
    The admin gets every vhost and the ``administrator`` tag.
    """
    algorithm = "rabbit_password_hashing_sha256"
    users = [
        {
            "name": settings.admin_user,
            "password_hash": password_hash(settings.admin_user, admin_password),
            "hashing_algorithm": algorithm,
            "tags": ["administrator"],
            "limits": {},
        }
    ]
    users += [
        {
            "name": u.name,
            "password_hash": "",
            "hashing_algorithm": algorithm,
            "tags": list(u.tags),
            "limits": {},
        }
        for u in settings.users
    ]
    permissions = [
        {
            "user": settings.admin_user,
            "vhost": v.name,
            "configure": ".*",
            "write": ".*",
            "read": ".*",
        }
        for v in settings.vhosts
    ]
    permissions += [
        {
            "user": u.name,
            "vhost": p.vhost,
            "configure": p.configure,
            "write": p.write,
            "read": p.read,
        }
        for u in settings.users
        for p in u.permissions
    ]
    document = {
        "users": users,
        "vhosts": [
            {
                "name": v.name,
                "limits": [],
                "metadata": {
                    "description": v.description,
                    "tags": [],
                    "default_queue_type": v.default_queue_type,
                },
            }
            for v in settings.vhosts
        ],
        "permissions": permissions,
        "policies": [
            {
                "vhost": p.vhost,
                "name": p.name,
                "pattern": p.pattern,
                "apply-to": p.apply_to,
                "definition": dict(p.definition),
                "priority": p.priority,
            }
            for p in settings.policies
        ],
    }
    return json.dumps(document, indent=2, sort_keys=True) + "\n"
