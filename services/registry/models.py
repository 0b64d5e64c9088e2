"""Request and response bodies of the registry REST API."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, StringConstraints

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Text = Annotated[str, StringConstraints(max_length=5000)]
Answer = Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000)]
QuestionId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,40}$")]


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("must include a timezone, e.g. 2026-12-01T15:00:00Z")
    return value


AwareDatetime = Annotated[datetime, AfterValidator(_aware)]


class Mode(StrEnum):
    WEBINAR = "webinar"
    MEETING = "meeting"


class Approval(StrEnum):
    AUTO = "auto"
    MANUAL = "manual"


class Status(StrEnum):
    SCHEDULED = "scheduled"
    LIVE = "live"
    ENDED = "ended"


class RegistrationStatus(StrEnum):
    APPROVED = "approved"
    PENDING = "pending"
    REJECTED = "rejected"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Question(Strict):
    id: QuestionId
    label: Title
    required: bool = False
    choices: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=20
    )


class WebinarCreate(Strict):
    title: Title
    description: Text = ""
    starts_at: AwareDatetime
    duration_minutes: int = Field(ge=1, le=24 * 60)
    mode: Mode = Mode.WEBINAR
    capacity: int = Field(default=1000, ge=1, le=100_000)
    approval: Approval = Approval.AUTO
    questions: list[Question] = Field(default_factory=list, max_length=20)
    allow_anonymous_questions: bool = False
    host_name: Name = "Host"


class WebinarUpdate(Strict):
    title: Title | None = None
    description: Text | None = None
    starts_at: AwareDatetime | None = None
    duration_minutes: int | None = Field(default=None, ge=1, le=24 * 60)
    mode: Mode | None = None
    capacity: int | None = Field(default=None, ge=1, le=100_000)
    approval: Approval | None = None
    questions: list[Question] | None = Field(default=None, max_length=20)
    allow_anonymous_questions: bool | None = None


class Webinar(BaseModel):
    """A webinar as stored; `public()` drops what only organizers may see."""

    id: str
    organizer_id: str
    title: str
    description: str
    starts_at: datetime
    duration_minutes: int
    mode: Mode
    capacity: int
    approval: Approval
    questions: list[Question]
    allow_anonymous_questions: bool
    host_id: str
    host_name: str
    status: Status = Status.SCHEDULED
    created_at: datetime

    def public(self) -> "WebinarPublic":
        return WebinarPublic.model_validate(self.model_dump())


class WebinarPublic(BaseModel):
    id: str
    title: str
    description: str
    starts_at: datetime
    duration_minutes: int
    mode: Mode
    capacity: int
    approval: Approval
    questions: list[Question]
    allow_anonymous_questions: bool
    status: Status


class JoinLink(BaseModel):
    participant_id: str
    role: str
    join_url: str
    token: str


class WebinarCreated(BaseModel):
    id: str
    webinar: WebinarPublic
    host: JoinLink
    registration_url: str


class SpeakerRole(StrEnum):
    PANELIST = "panelist"
    COHOST = "cohost"


class PanelistCreate(Strict):
    name: Name
    email: EmailStr
    # A cohost moderates like the host (promote, mute, remove); a panelist speaks.
    role: SpeakerRole = SpeakerRole.PANELIST


class Panelist(BaseModel):
    id: str
    name: str
    email: str
    role: SpeakerRole = SpeakerRole.PANELIST
    created_at: datetime


class RegistrationCreate(Strict):
    name: Name
    email: EmailStr
    answers: dict[QuestionId, Answer] = Field(default_factory=dict, max_length=20)


class Registration(BaseModel):
    id: str
    webinar_id: str
    name: str
    email: str
    answers: dict[str, str]
    status: RegistrationStatus
    created_at: datetime
    decided_at: datetime | None = None


class RegistrationResult(BaseModel):
    registration: Registration
    status: RegistrationStatus
    join_url: str | None = None
    token: str | None = None
    # Only in the first reply: where the registrant polls until approved.
    status_url: str | None = None


class OrganizerCreate(Strict):
    name: Name


class OrganizerCreated(BaseModel):
    id: str
    name: str
    key: str
