"""Submitting ``percept train`` to a Ray job server that has just started: Ray's job head answers
HTTP 500 "No available agent to submit job, please try again later" until the head node's job
agent has registered (10 s of its own wait on a busy machine is not always enough). The
submission is made again until a deadline; any other error is raised at once."""

from __future__ import annotations

import pytest

from pipelines.stages.train import submit_when_ready

NO_AGENT = "Request failed with status code 500: No available agent to submit job, please try again later.."


class JobServer:
    """The job server's answers, one per submission: an exception or a submission id."""

    def __init__(self, *answers):
        self.answers, self.calls = list(answers), []

    def submit_job(self, entrypoint, runtime_env):
        self.calls.append((entrypoint, runtime_env))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_no_agent_yet_is_submitted_again_until_accepted():
    server = JobServer(RuntimeError(NO_AGENT), RuntimeError(NO_AGENT), "raysubmit_1")
    assert submit_when_ready(server, "echo hi", {"env_vars": {"A": "1"}}, wait_s=5, pause_s=0.01) == "raysubmit_1"
    assert server.calls == [("echo hi", {"env_vars": {"A": "1"}})] * 3


def test_other_errors_are_not_retried():
    server = JobServer(RuntimeError("Request failed with status code 400: bad runtime_env"), "raysubmit_1")
    with pytest.raises(RuntimeError, match="bad runtime_env"):
        submit_when_ready(server, "echo hi", {}, wait_s=5, pause_s=0.01)
    assert len(server.calls) == 1


def test_the_wait_is_bounded():
    server = JobServer(*[RuntimeError(NO_AGENT)] * 100)
    with pytest.raises(RuntimeError, match="No available agent"):
        submit_when_ready(server, "echo hi", {}, wait_s=0.05, pause_s=0.02)
    assert 2 <= len(server.calls) < 10
