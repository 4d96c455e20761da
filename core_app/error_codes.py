"""Every stable `code` MobileSD sends, with what it means: the registry the OpenAPI document
builds its enums from. A code raised anywhere in the source must be listed here (a test
reads the source to keep it so).

core_app is the lowest layer, so the codes of the layers above are listed here as plain
strings, not imported.
"""

# The `code` of the one error body (`core_app.errors.error_body`).
ERROR_CODES: dict[str, str] = {
    # Our own refusals (core_app.errors) and DRF's exceptions as the handler names them.
    "bad_request": "The request was refused.",
    "validation_error": "Invalid input; `fields` says where.",
    "malformed_request": "The body could not be parsed (malformed JSON, bad encoding).",
    "unsupported_media_type": "The body's Content-Type is not accepted here.",
    "payload_too_large": "The body is larger than the limit.",
    "length_required": "A chunked body the web server did not finish reading.",
    "not_acceptable": "No answer in a media type the Accept header allows.",
    "method_not_allowed": "The path does not take this method.",
    "throttled": "Too many requests for this key; retry after the Retry-After header.",
    "not_found": "No such object or endpoint.",
    "permission_denied": "Not allowed (e.g. a staff session's write without a CSRF token).",
    "conflict": "The request conflicts with the object's state.",
    "server_error": "An internal error in MobileSD.",
    "database_unavailable": "MobileSD's database could not be reached, or no connection to "
    "it came free in time; retry after the Retry-After header.",
    # Authentication.
    "authentication_required": "An API key is required.",
    "authentication_failed": "The credentials were refused.",
    "invalid_api_key": "The API key sent is unknown.",
    "revoked_api_key": "The API key sent has been revoked.",
    "inactive_user": "The user the API key belongs to is deactivated.",
    "invalid_token": "The event stream token is not valid (tampered with, or its user may "
    "no longer sign in).",
    "expired_token": "The event stream token has expired: get a new one.",
    "admin_scope_required": "Only an admin key (or a staff session) may do this.",
    "too_many_failed_attempts": "Too many failed sign-ins from this address; retry after "
    "the Retry-After header.",
    # Servers and models.
    "server_not_found": "No server has this alias.",
    "server_has_active_jobs": "The server still has pending or processing jobs.",
    "invalid_url": "A server URL MobileSD may not call (see the README), or one with "
    "credentials in it.",
    "invalid_name": "A name with control or bidirectional-override characters.",
    "models_dir_not_allowed": "The models folder is not an allowed, existing folder.",
    # A job's extras its server lacks (queue_app.extension_checks): at submit when the
    # server's cached list is fresh, or at dispatch as the failed job's code.
    "script_not_found": "A script the job names (script_name, alwayson_scripts) is not on "
    "the server, or not for the job's mode.",
    "script_kind_mismatch": "A selectable script named in alwayson_scripts, or an always-on "
    "one as script_name.",
    "vae_not_found": "The VAE the job names is not on the server.",
    "module_not_found": "A text encoder (Forge module) the job names is not on the server.",
    "style_not_found": "A prompt style the job names is not on the server.",
    "upscaler_not_found": "The hires upscaler the job names is not on the server.",
    "controlnet_model_not_found": "A ControlNet unit's model is not in the server's "
    "ControlNet model list.",
    "server_unreachable": "A server MobileSD had to ask live could not be reached or read.",
    # Jobs and their images.
    "job_not_found": "No such job.",
    "job_not_cancellable": "The job has finished and cannot be cancelled.",
    "job_not_retryable": "Only a failed or cancelled job can be retried.",
    "job_not_pending": "The job has started (or finished): only a pending job can be changed "
    "or moved.",
    "queue_limit": "The user already has as many pending jobs as their quota allows.",
    "idempotency_key_reused": "The Idempotency-Key was used for a different request.",
    "batch_not_found": "No such batch.",
    # The changes-since feed (`updated_since`).
    "invalid_cursor": "updated_since is not 0 or a next_cursor MobileSD answered.",
    "cursor_expired": "The events after this cursor have been pruned: start again from "
    "updated_since=0.",
    "image_not_found": "No such image, or its file is no longer stored.",
    # Signed image links (core_app.signed_links, queue_app.links).
    "invalid_signature": "The signed link's exp or sig does not match its path (changed, cut, "
    "or for another image).",
    "expired_link": "The signed link has expired: get the job's links again.",
    # Uploads (input images of img2img and inpaint jobs).
    "upload_not_found": "No such upload (another user's, deleted, or removed unused).",
    "upload_too_large": "The image has more bytes or pixels than the upload limits allow.",
    "preview_not_found": "The job has no live preview (it is not running, or none yet).",
    # Civitai: image recipes and downloads.
    "invalid_reference": "Give either an id or a URL, not both or neither.",
    "invalid_civitai_url": "The URL is not a Civitai page or download link MobileSD reads.",
    "invalid_image": "The file is not a PNG, JPEG or WebP image that can be read.",
    "civitai_image_not_found": "Civitai has no such image.",
    "download_not_found": "No such download.",
    "download_already_finished": "The download has finished and cannot be cancelled.",
    "download_not_retryable": "Only a failed or cancelled download can be retried.",
    "download_exists": "Another user's download already fetches (or has fetched) this file to "
    "these folders.",
    "invalid_file_name": "The file name is not allowed (folders, bad characters).",
    "no_target_server": "Name at least one target server.",
    "too_many_targets": "Too many target servers.",
    "models_dir_not_set": "A target server has no models folder configured.",
    "models_dir_missing": "A target server's models folder does not exist here.",
    "embeddings_dir_missing": "A target server's embeddings folder does not exist here.",
    "unsupported_model_type": "MobileSD does not download models of this type.",
    "civitai_hash_unavailable": "Civitai publishes no SHA256 for the file to verify it by.",
    "civitai_file_not_found": "The model version has no file matching the request.",
    # Civitai's own refusals (integrations.civitai.client), passed on with their status.
    "civitai_error": "Civitai failed.",
    "civitai_unavailable": "Civitai could not be reached, timed out or failed (5xx).",
    "civitai_interrupted": "A transfer from Civitai stopped part-way.",
    "civitai_rate_limited": "Civitai kept answering 429.",
    "civitai_bad_request": "Civitai refused the request.",
    "civitai_login_required": "Civitai requires a (valid) API key for it.",
    "civitai_early_access": "The model is in Early Access on Civitai.",
    "civitai_forbidden": "Civitai does not allow this account to get it.",
    "civitai_not_found": "Civitai has no such model, version or file.",
    "civitai_archived": "The model is archived on Civitai.",
    # Webhooks (notifications_app).
    "webhook_not_found": "No such webhook endpoint.",
    "delivery_not_found": "No such delivery of this webhook endpoint.",
    "delivery_in_progress": "The delivery is being sent right now.",
    # Push notifications (notifications_app.push_services).
    "notification_target_not_found": "No such notification target (or another user's).",
    "notification_failed": "The notification could not be sent (the service refused it or "
    "could not be reached); the message says why.",
    "notification_not_failed": "Only a failed notification can be sent again.",
}

# (code, meaning) pairs: the choices of the error body's `code` (ErrorCodeEnum).
ERROR_CODE_CHOICES: list[tuple[str, str]] = list(ERROR_CODES.items())

# `result_details.code` of a failed job: why it failed, beside `result_details.error`.
JOB_FAILURE_CODES: dict[str, str] = {
    "checkpoint_mismatch": "The server generated with another checkpoint than the one "
    "resolved; its images were discarded.",
    "lora_not_found": "A LoRA the job names is not on the server (close matches in the error).",
    "lora_ambiguous": "A LoRA the job names matches several of the server's; name it by its path.",
    "expired": "The job was still pending at its expires_at (expires_after), so it never ran.",
    "input_missing": "An input image of the job (an upload) is no longer stored.",
    **{
        code: ERROR_CODES[code]
        for code in (
            "script_not_found",
            "script_kind_mismatch",
            "vae_not_found",
            "module_not_found",
            "style_not_found",
            "upscaler_not_found",
            "controlnet_model_not_found",
        )
    },
}

# `error.code` of a failed download, beside `error.message`: the Civitai codes above, the
# planning codes above, and these of the transfer itself.
DOWNLOAD_FAILURE_CODES: dict[str, str] = {
    **{code: text for code, text in ERROR_CODES.items() if code.startswith("civitai_")},
    "invalid_file_name": ERROR_CODES["invalid_file_name"],
    "models_dir_missing": ERROR_CODES["models_dir_missing"],
    "embeddings_dir_missing": ERROR_CODES["embeddings_dir_missing"],
    "file_exists": "Another file is already at the destination.",
    "hash_mismatch": "The file's SHA256 is not the one Civitai published.",
    "copy_mismatch": "A copy to a further server's folder is damaged.",
    "insufficient_disk_space": "Not enough free space for the file.",
    "disk_error": "The file could not be written.",
    "worker_lost": "The worker running the download died.",
}
