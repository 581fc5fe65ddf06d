"""The user entity of the Users API v4.0, as data: which attributes exist and how to read them."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType


class Kind(enum.Enum):
    """How a CSV cell for an attribute is read and how the attribute is stored."""

    STRING = "string"
    BOOL = "bool"
    INT = "int"
    INT_LIST = "int list"
    GROUP = "agent group"  # memberOf: {"agentGroupId": ..., "assignmentDate": ...}
    GROUP_LIST = "agent group list"  # managerOf: [{"agentGroupId": ..., "assignmentDate": ...}]


#: Attributes a changes file may set, with their kind.
WRITABLE: Mapping[str, Kind] = MappingProxyType(
    {
        "pid": Kind.STRING,
        "loginName": Kind.STRING,
        "fullName": Kind.STRING,
        "nickname": Kind.STRING,
        "isEnabled": Kind.BOOL,
        "disabledManually": Kind.BOOL,
        "maxChats": Kind.INT,
        "maxAsyncChats": Kind.INT,
        "email": Kind.STRING,
        "skillIds": Kind.INT_LIST,
        "profileIds": Kind.INT_LIST,
        "lobIds": Kind.INT_LIST,
        "permissionGroups": Kind.INT_LIST,
        "memberOf": Kind.GROUP,
        "managerOf": Kind.GROUP_LIST,
        "changePwdNextLogin": Kind.BOOL,
        "passwordSh": Kind.STRING,
        "pictureId": Kind.STRING,
        "pictureUrl": Kind.STRING,
        "backgndImgUri": Kind.STRING,
        "pnCertName": Kind.STRING,
        "description": Kind.STRING,
        "mobileNumber": Kind.STRING,
        "employeeId": Kind.STRING,
        "isApiUser": Kind.BOOL,
        "userTypeId": Kind.INT,
        "allowedAppKeys": Kind.STRING,
    }
)

#: Attributes the server owns; a changes file naming one is refused whole.
READ_ONLY: frozenset[str] = frozenset(
    {"id", "deleted", "dateUpdated", "lastPwdChangeDate", "oldPassword", "confirmPassword"}
)

#: The key column of a changes file.
KEY = "id"

#: List attributes: `attr` replaces, `attr:add` / `attr:remove` edit members.
LISTS: frozenset[str] = frozenset(
    name for name, kind in WRITABLE.items() if kind in (Kind.INT_LIST, Kind.GROUP_LIST)
)

#: Attributes that GET answers empty to hide personal data; see README "Masked attributes".
MASKED: frozenset[str] = frozenset({"fullName", "employeeId"})

#: Never logged, never written to the results file, sent only when a row sets it.
SECRET_ATTRIBUTES: frozenset[str] = frozenset({"passwordSh"})

#: Attributes the API requires on every user (the simulator checks them on PUT).
REQUIRED: frozenset[str] = frozenset(
    {"loginName", "fullName", "nickname", "isEnabled", "maxChats", "email", "profileIds"}
)

#: Profile ids of the built-in roles (LivePerson's defaults).
AGENT_PROFILE = 3
AGENT_MANAGER_PROFILE = 2
ADMIN_PROFILE = 1
CAMPAIGN_MANAGER_PROFILE = 4

#: Largest user id: the API's ids are Java longs.
MAX_USER_ID = 2**63 - 1
