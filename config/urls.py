from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import SimpleRouter

from secretsapp.api import views as secrets_api
from workflows.api import views as workflows_api

admin.site.site_header = "Secret Keys administration"
admin.site.site_title = "Secret Keys admin"
admin.site.index_title = "Your organization"

api = SimpleRouter()
api.register("members", secrets_api.MemberViewSet, basename="member")
api.register("groups", secrets_api.GroupViewSet, basename="group")
api.register("secrets", secrets_api.SecretKeyViewSet, basename="secret")
api.register("audit-events", secrets_api.AuditEventViewSet, basename="audit-event")
api.register("workflows", workflows_api.WorkflowViewSet, basename="workflow")
api.register("actions", workflows_api.ActionViewSet, basename="action")
api.register("runs", workflows_api.RunViewSet, basename="run")

api_v1 = [
    path("auth/token/", secrets_api.ObtainTokenView.as_view(), name="token"),
    path("auth/whoami/", secrets_api.WhoAmIView.as_view(), name="whoami"),
    *api.urls,
]

handler404 = "secretsapp.api.conventions.not_found"
handler500 = "secretsapp.api.conventions.server_error"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include((api_v1, "api"), namespace="api")),
    # Outside /api/v1/: the token in the URL is the credential, not a session or API token.
    path("hooks/<path:token>/", workflows_api.WebhookTriggerView.as_view(), name="webhook-trigger"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as a file: no inline script (CSP).
    path(
        "api/docs/",
        # GET only: its OPTIONS answer has no template and would be a 500.
        SpectacularSwaggerSplitView.as_view(url_name="schema", http_method_names=["get", "head"]),
        name="api-docs",
    ),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("workflows/", include("workflows.urls")),
    path("", include("secretsapp.urls")),
    path("", RedirectView.as_view(pattern_name="workflows:list", permanent=False)),
]
