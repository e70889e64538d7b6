"""The Celery names of the tasks, shared by ``image_tasks`` (which defines them) and whoever sends them.

They live below every sender, so sending a task never imports the module that runs it.
"""

PROCESS_IMAGE_TASK = "image_tasks.process_image"
IMPORT_TASK = "image_tasks.import_request"
DELIVER_TASK = "image_tasks.deliver_webhook"
DISPATCH_TASK = "image_tasks.dispatch"
SWEEP_TASK = "image_tasks.sweep"
RETENTION_TASK = "image_tasks.apply_retention"
