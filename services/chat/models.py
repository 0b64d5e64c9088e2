"""Commands from signaling (CONTRACTS.md, "Chat service") and what the service returns.

A command is `{"webinar_id", "participant": {id, name, role, on_stage}, "args": {...}}`;
each request type has its own `args` model so that a bad field is an `invalid` reply
naming the field, and the AsyncAPI document shows every payload.
"""

import unicodedata
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from services.common.audience import HOST_ROLES, STAGE_ROLES, visible_to

MAX_CHAT_CHARS = 2000
MAX_QUESTION_CHARS = 1000
MAX_POLL_OPTIONS = 10
HISTORY_PAGE = 100

Role = Literal["host", "cohost", "panelist", "attendee"]
Audience = Literal["everyone", "panelists", "hosts", "private"]
Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
# Stream entry id, e.g. 1732712345678-0: the `before` cursor of chat.history.
Cursor = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,20}-[0-9]{1,20}$")]

# Bidirectional overrides and isolates let a message display as something else.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_ALLOWED_CONTROLS = frozenset("\n\t")


def plain_text(value: str) -> str:
    """Text is stored and sent as-is; only control characters are refused."""
    for char in value:
        if char in _ALLOWED_CONTROLS:
            continue
        if unicodedata.category(char) in ("Cc", "Cs") or char in _BIDI_CONTROLS:
            raise ValueError(f"control character U+{ord(char):04X} is not allowed")
    if not value.strip():
        raise ValueError("must not be empty")
    return value


ChatText = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_CHAT_CHARS), AfterValidator(plain_text)
]
QuestionText = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_QUESTION_CHARS), AfterValidator(plain_text)
]
PollText = Annotated[
    str, StringConstraints(min_length=1, max_length=300), AfterValidator(plain_text)
]
OptionText = Annotated[
    str, StringConstraints(min_length=1, max_length=200), AfterValidator(plain_text)
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Participant(BaseModel):
    """The participant reference signaling sends with every command."""

    id: Id
    name: Annotated[str, StringConstraints(max_length=200)] = ""
    role: Role
    on_stage: bool = False

    @property
    def is_host(self) -> bool:
        """Hosts and cohosts: moderation and polls."""
        return self.role in HOST_ROLES

    @property
    def is_speaker(self) -> bool:
        """Hosts, cohosts and panelists: answering questions."""
        return self.role in STAGE_ROLES

    @property
    def on_stage_now(self) -> bool:
        return self.role in STAGE_ROLES or self.on_stage

    def can_see(self, data: dict[str, Any]) -> bool:
        return visible_to(data, self.id, self.role, self.on_stage)


class NoArgs(Strict):
    pass


A = TypeVar("A", bound=BaseModel)


class Command(BaseModel, Generic[A]):
    webinar_id: Id
    participant: Participant
    args: A


# chat ------------------------------------------------------------------------------
class ChatSendArgs(Strict):
    text: ChatText
    # "everyone", "panelists", or the participant id of the one recipient.
    to: Id = "everyone"


class ChatHistoryArgs(Strict):
    before: Cursor | None = None
    limit: int = Field(default=HISTORY_PAGE, ge=1, le=HISTORY_PAGE)


class ChatDeleteArgs(Strict):
    message_id: Id


class ChatMuteArgs(Strict):
    participant_id: Id
    muted: bool = True


class ChatDisableArgs(Strict):
    disabled: bool = True


class ChatSlowmodeArgs(Strict):
    seconds: int = Field(ge=0, le=3600)


class Sender(BaseModel):
    id: str
    name: str
    role: Role


class ChatMessage(BaseModel):
    """A chat message, as in `chat.message` events and `chat.history` replies."""

    id: str
    sender: Sender
    to: str
    text: str
    sent_at: datetime
    audience: Audience
    recipients: list[str] | None = None


class ChatDeleted(BaseModel):
    message_id: str
    deleted_by: str
    audience: Audience
    recipients: list[str] | None = None


class ChatState(BaseModel):
    """In chat.history replies: whether attendees may write, slow mode, and whether the
    participant asking is muted."""

    disabled: bool
    slow_mode_seconds: int
    muted: bool


class ChatToggled(BaseModel):
    """`chat.disabled` / `chat.enabled`: whether attendees may write."""

    by: str


# Q&A -------------------------------------------------------------------------------
class QaAskArgs(Strict):
    text: QuestionText
    anonymous: bool = False


class QaQuestionArgs(Strict):
    question_id: Id


class QaAnswerArgs(Strict):
    question_id: Id
    text: QuestionText | None = None
    live: bool = False


class Question(BaseModel):
    id: str
    text: str
    # None when asked anonymously.
    participant_id: str | None
    name: str | None
    anonymous: bool
    status: Literal["open", "answered", "dismissed"] = "open"
    answer: str | None = None
    answered_live: bool = False
    answered_by: str | None = None
    asked_at: datetime
    votes: int = 0
    # In qa.list replies: whether the participant asking upvoted it.
    voted: bool | None = None


class QuestionVotes(BaseModel):
    question_id: str
    votes: int


class QuestionDismissed(BaseModel):
    question_id: str
    dismissed_by: str


# polls -----------------------------------------------------------------------------
class PollCreateArgs(Strict):
    question: PollText
    options: list[OptionText] = Field(min_length=2, max_length=MAX_POLL_OPTIONS)
    multiple: bool = False
    results: Literal["everyone", "hosts"] = "everyone"


class PollVoteArgs(Strict):
    poll_id: Id
    # Indexes into the poll's options.
    choices: list[int] = Field(min_length=1, max_length=MAX_POLL_OPTIONS)


class PollCloseArgs(Strict):
    poll_id: Id


class Poll(BaseModel):
    """A poll as stored; `counts` are kept beside it."""

    id: str
    question: str
    options: list[str]
    multiple: bool
    results: Literal["everyone", "hosts"]
    status: Literal["open", "closed"] = "open"
    created_by: str
    created_at: datetime
    closed_at: datetime | None = None


class PollView(Poll):
    """A poll as one participant sees it: counts only where results are visible to them."""

    voters: int = 0
    counts: list[int] | None = None
    my_choices: list[int] | None = None


class PollVotes(BaseModel):
    poll_id: str
    voters: int
    counts: list[int]
    audience: Audience


# Commands, one per request type (the subject is svc.chat.<request type>).
class ChatSend(Command[ChatSendArgs]):
    pass


class ChatHistory(Command[ChatHistoryArgs]):
    args: ChatHistoryArgs = ChatHistoryArgs()


class ChatDelete(Command[ChatDeleteArgs]):
    pass


class ChatMute(Command[ChatMuteArgs]):
    pass


class ChatDisable(Command[ChatDisableArgs]):
    pass


class ChatSlowmode(Command[ChatSlowmodeArgs]):
    pass


class QaAsk(Command[QaAskArgs]):
    pass


class QaUpvote(Command[QaQuestionArgs]):
    pass


class QaAnswer(Command[QaAnswerArgs]):
    pass


class QaDismiss(Command[QaQuestionArgs]):
    pass


class QaList(Command[NoArgs]):
    args: NoArgs = NoArgs()


class PollCreate(Command[PollCreateArgs]):
    pass


class PollVote(Command[PollVoteArgs]):
    pass


class PollClose(Command[PollCloseArgs]):
    pass


class PollList(Command[NoArgs]):
    args: NoArgs = NoArgs()
