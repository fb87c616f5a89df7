"""Streaming readers: input files -> documents tables (`schema.DOCUMENT_SCHEMA`), bad records dead-lettered."""
from paraphrase_pipe.sources.files import SourceFile, discover
from paraphrase_pipe.sources.tasks import Task, plan_tasks, read_task

__all__ = ["SourceFile", "Task", "discover", "plan_tasks", "read_task"]
