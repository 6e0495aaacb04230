"""The usable-keys queryset costs the same number of queries for 10 or 500 keys."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from guardian.shortcuts import assign_perm

from secretsapp.models import Access, Role, SecretKey
from tests.factories import MembershipFactory, OrganizationGroupFactory, SecretKeyFactory


def _organization_with_keys(count: int):
    member = MembershipFactory(role=Role.MEMBER)
    organization = member.organization
    groups = [
        OrganizationGroupFactory(organization=organization, members=[member.user]) for _ in range(5)
    ]
    keys = SecretKeyFactory.create_batch(count, organization=organization, access=Access.RESTRICTED)
    for index, secret_key in enumerate(keys):
        if index % 3 == 0:
            assign_perm("use_secretkey", member.user, secret_key)
        elif index % 3 == 1:
            assign_perm("manage_secretkey", groups[index % len(groups)].group, secret_key)
        # every third key stays invisible to the member
    return member.user


@pytest.mark.parametrize("role", [Role.MEMBER, Role.ADMIN, Role.VIEWER])
def test_usable_keys_query_count_is_constant(db, django_assert_num_queries, role):
    counts = {}
    for size in (10, 500):
        user = _organization_with_keys(size)
        user.membership.role = role
        user.membership.save()
        fresh_user = get_user_model().objects.get(pk=user.pk)
        # 1: the membership; 2: the keys with can_use/can_manage;
        # 3-4: user grants, group grants (with principals and permissions joined)
        with django_assert_num_queries(4) as captured:
            keys = list(SecretKey.objects.for_user(fresh_user).with_grants())
            for secret_key in keys:
                assert secret_key.grants is not None
        counts[size] = (len(captured), len(keys))
    assert counts[10][0] == counts[500][0]
    assert counts[500][1] > counts[10][1]


def test_member_sees_only_granted_keys_among_many(db):
    user = _organization_with_keys(30)
    visible = SecretKey.objects.for_user(user)
    assert visible.count() == 20
    assert visible.filter(can_manage=True).count() == 10
