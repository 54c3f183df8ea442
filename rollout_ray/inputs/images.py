"""Images in prompts: a row's `input_image` (Responses API) and `image_url` (chat
completions) parts, as one part shape, and where their bytes may come from.

Every image part becomes `{"type": "image_url", "image_url": {"url": ..., "detail"?}}`.
Where an image may come from (issue 23's rule on requests to other hosts):
- `data:` URLs: the row holds the image;
- local paths (absolute, or relative to the working directory), `file://` and `s3://`
  URLs: files the row names, read by rollout-ray as inputs are (and only if their bytes
  are an image: PNG, JPEG, GIF, WebP or BMP, so a row can't send any file it names to an
  endpoint), then sent inline as `data:` URLs;
- `http(s)://` URLs: never fetched by rollout-ray. The `openai` engine passes them
  through to its endpoint, which fetches them (or not) by its own rules; an engine that
  would have to fetch them itself fails such rows with a reason.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from rollout_ray.errors import RowError

#: The largest image read from a file or a data: URL (hosted APIs take about 20 MB).
MAX_IMAGE_BYTES = 20 << 20
#: The first bytes of the image formats endpoints take.
_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF87a": "image/gif",
    b"GIF89a": "image/gif",
    b"BM": "image/bmp",
}


def image_part(part: dict[str, Any], where: str) -> dict[str, Any] | None:
    """A content part as a chat-completions image part; None when it is no image part.

    Raises:
        RowError: an image part without a usable URL (a file_id, an empty url, a URL of
            another scheme); names the part.
    """
    kind = part.get("type")
    if kind == "image_url":
        value = part.get("image_url")
        url = value.get("url") if isinstance(value, dict) else value
        detail = value.get("detail") if isinstance(value, dict) else None
    elif kind == "input_image":
        url, detail = part.get("image_url"), part.get("detail")
        if url is None and part.get("file_id") is not None:
            raise RowError(f"{where} names an uploaded file (file_id): give its image_url")
    else:
        return None
    if not isinstance(url, str) or not url.strip():
        raise RowError(f"{where} is an image part without a URL (image_url)")
    if source_kind(url) == "other":
        raise RowError(
            f"{where}: image {url[:60]!r} is not a data:, http(s)://, s3://, file:// URL or a path"
        )
    image: dict[str, Any] = {"url": url}
    if isinstance(detail, str):
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


def source_kind(url: str) -> str:
    """data | remote | file | other."""
    lowered = url[:12].lower()
    if lowered.startswith("data:"):
        return "data"
    if lowered.startswith(("http://", "https://")):
        return "remote"
    if lowered.startswith(("s3://", "file://")) or "://" not in url:
        return "file"
    return "other"


def has_images(messages: list[dict[str, Any]]) -> bool:
    return any(isinstance(m.get("content"), list) for m in messages)


def message_text(content: Any) -> str:
    """A message's content as text, an image as a short mark (records, token estimates)."""
    if isinstance(content, str):
        return content
    parts = []
    for part in content or []:
        if part.get("type") == "image_url":
            parts.append(f"[image: {describe(part['image_url']['url'])}]")
        else:
            parts.append(str(part.get("text") or ""))
    return "".join(parts)


def describe(url: str) -> str:
    """An image's URL, or a data: URL's type and size (never its bytes)."""
    if source_kind(url) != "data":
        return url if len(url) <= 200 else url[:197] + "..."
    head, _, body = url.partition(",")
    return f"{head} ({len(body) * 3 // 4:,} bytes)"


def text_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages with their content as text (what a record's `prompt_messages` holds)."""
    return [
        m if isinstance(m.get("content"), str) else {**m, "content": message_text(m["content"])}
        for m in messages
    ]


def read_image(url: str) -> tuple[bytes, str]:
    """An image's bytes and MIME type, from a data: URL or a file the row names.

    Raises:
        RowError: remote URL (never fetched here), missing or unreadable file, bad
            base64, not an image, or over MAX_IMAGE_BYTES.
    """
    kind = source_kind(url)
    if kind == "remote":
        raise RowError(
            f"image {url[:100]!r} is on another host: rollout-ray never fetches images "
            "from URLs (use the openai engine, which passes the URL to its endpoint, or "
            "give the image as a file or a data: URL)",
            "prompt",
        )
    if kind == "data":
        head, _, body = url.partition(",")
        if ";base64" not in head:
            raise RowError(f"image data URL {head[:60]!r} is not base64", "prompt")
        if len(body) * 3 // 4 > MAX_IMAGE_BYTES:
            raise RowError(f"image data URL is over {MAX_IMAGE_BYTES >> 20} MiB", "prompt")
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise RowError("image data URL is not valid base64", "prompt") from None
    else:
        data = _read_file(url)
    mime = image_type(data)
    if mime is None:
        raise RowError(
            f"image {describe(url)!r} is not a PNG, JPEG, GIF, WebP or BMP image", "prompt"
        )
    return data, mime


def _read_file(url: str) -> bytes:
    from rollout_ray import storage

    path = url
    try:
        fs, resolved = storage.split_uri(path)
        size = fs.size(resolved)
        if size is not None and size > MAX_IMAGE_BYTES:
            raise RowError(f"image {path!r} is over {MAX_IMAGE_BYTES >> 20} MiB", "prompt")
        with fs.open(resolved, "rb") as f:
            return f.read(MAX_IMAGE_BYTES + 1)
    except RowError:
        raise
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise RowError(f"image {path!r} can't be read: {reason}", "prompt") from None


def image_type(data: bytes) -> str | None:
    """The MIME type of image bytes, by their magic number; None if not an image."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((mime for magic, mime in _MAGIC.items() if data.startswith(magic)), None)


def data_url(url: str) -> str:
    """A file the row names as an inline data: URL (data: URLs checked, kept as given).

    Raises:
        RowError: see read_image.
    """
    data, mime = read_image(url)
    if source_kind(url) == "data":
        return url
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def inline_images(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as an endpoint takes them: images from files inline as data: URLs, data:
    URLs checked, http(s) URLs as given (the endpoint fetches them, rollout-ray never).

    Raises:
        RowError: an image can't be read or is no image (see read_image).
    """
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = [_inlined(part) for part in content]
            message = {**message, "content": content}
        out.append(message)
    return out


def _inlined(part: dict[str, Any]) -> dict[str, Any]:
    if part.get("type") != "image_url":
        return part
    url = part["image_url"]["url"]
    if source_kind(url) == "remote":
        return part
    return {**part, "image_url": {**part["image_url"], "url": data_url(url)}}


def responses_content(content: Any) -> Any:
    """Chat-completions content parts as the Responses API's `input_text` and
    `input_image` parts (text content stays a string)."""
    if not isinstance(content, list):
        return content
    parts = []
    for part in content:
        if part.get("type") == "image_url":
            image = {"type": "input_image", "image_url": part["image_url"]["url"]}
            image["detail"] = part["image_url"].get("detail", "auto")
            parts.append(image)
        else:
            parts.append({"type": "input_text", "text": part.get("text") or ""})
    return parts
