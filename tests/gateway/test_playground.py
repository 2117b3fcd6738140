"""The playground's views (gateway/playground.py): who gets the page, which models it offers, its
login form and the job it polls. The page itself, in a browser: tests/browser/test_playground.py."""

import re
from types import SimpleNamespace

from gateway.models import Job
from providers.models import ModelRoute, Provider

PASSWORD = "correct horse battery staple"  # the user fixture's


def options(html: str, select_id: str) -> list[str]:
    select = html.split(f'id="{select_id}"', 1)[1].split("</select>", 1)[0]
    return re.findall(r'<option value="([^"]+)"', select)


def test_visitors_who_are_not_signed_in_are_sent_to_the_login_form(client, db):
    response = client.get("/playground/")

    assert response.status_code == 302
    assert response["Location"] == "/playground/login/?next=/playground/"


def test_a_user_who_is_not_staff_signs_in_and_lands_on_the_playground(client, user):
    response = client.post("/playground/login/", {"username": "alice", "password": PASSWORD, "next": "/playground/"})
    page = client.get("/playground/")

    assert response.status_code == 302 and response["Location"] == "/playground/"
    assert page.status_code == 200
    assert b'id="chat-prompt"' in page.content and b"Sign out" in page.content


def test_a_wrong_password_shows_the_form_again_with_an_error(client, user):
    response = client.post("/playground/login/", {"username": "alice", "password": "wrong"})

    assert response.status_code == 200
    assert b'role="alert"' in response.content
    assert "_auth_user_id" not in client.session


def test_login_attempts_share_the_admin_logins_limit(client, user, monkeypatch):
    import django_ratelimit.core

    monkeypatch.setattr(django_ratelimit.core, "time", SimpleNamespace(time=lambda: 1_800_000_000.0))
    for attempt in range(3):
        client.post("/admin/login/", {"username": "alice", "password": f"wrong-{attempt}"})
    statuses = [
        client.post("/playground/login/", {"username": "alice", "password": f"wrong-{i}"}).status_code for i in range(3)
    ]

    assert statuses == [200, 200, 429]  # five tries per username and minute, on both forms together


def test_signing_out_ends_the_session(client, user):
    client.force_login(user)

    response = client.post("/playground/logout/")

    assert response.status_code == 302 and response["Location"] == "/playground/login/"
    assert client.get("/playground/").status_code == 302


def test_the_selects_offer_enabled_priced_models_by_exact_name(client, user, fake_providers):
    client.force_login(user)
    ModelRoute.objects.get(name="gpt-4.1").delete()
    route = ModelRoute.objects.get(name="gpt-4o")
    route.enabled = False
    route.save()
    anthropic = Provider.objects.get(name="anthropic")
    anthropic.enabled = False
    anthropic.save()

    html = client.get("/playground/").content.decode()
    chat, images = options(html, "chat-model"), options(html, "image-model")

    assert "gpt-4o-mini" in chat and "gemini-2.5-flash" in chat
    assert "gpt-4o" not in chat and "gpt-4.1" not in chat  # disabled, gone
    assert not any(name.startswith("claude") for name in chat)  # its provider is disabled
    assert not any("*" in name for name in chat + images)  # patterns name no model to send
    assert "nano-banana" in images and "flux-schnell" in images
    assert "gpt-image-1" not in images  # unpriced: it would answer 403 model_not_priced
    assert not set(chat) & set(images) and "veo3" not in images
    assert "$0.15 in, $0.60 out per 1M tokens" in html and "$0.039 per image" in html


def test_staff_see_the_admin_link_and_the_admin_index_links_here(client, staff_user):
    client.force_login(staff_user)

    assert b'href="/admin/"' in client.get("/playground/").content
    assert b'href="/playground/"' in client.get("/admin/").content


def test_the_job_view_shows_the_users_own_job_only(client, user, bob, staff_user):
    def job_of(owner) -> Job:
        return Job.objects.create(user=owner, kind="image", model="nano-banana", request={}, endpoint="/x")

    mine, theirs = job_of(user), job_of(bob)
    client.force_login(user)

    own = client.get(f"/playground/jobs/{mine.pk}")
    other = client.get(f"/playground/jobs/{theirs.pk}")
    client.force_login(staff_user)  # the page shows one's own jobs, staff too
    as_staff = client.get(f"/playground/jobs/{mine.pk}")

    assert own.status_code == 200
    assert own.json()["id"] == str(mine.pk) and own.json()["status"] == "queued" and own.json()["outputs"] == []
    assert other.status_code == 404 and as_staff.status_code == 404


def test_the_job_view_needs_a_signed_in_user(client, user):
    job = Job.objects.create(user=user, kind="image", model="nano-banana", request={}, endpoint="/x")

    response = client.get(f"/playground/jobs/{job.pk}")

    assert response.status_code == 302 and response["Location"].startswith("/playground/login/")
