/*
 * Confluent's wire format for record values (docs/registry.md): magic byte 0, the writer's
 * schema id as 4 bytes big-endian, the message-index array locating the message in its schema
 * file, then the protobuf bytes. eskit frames envelopes only, and an envelope is always the
 * first message of the file eskit registers, so it writes the index array [0] as Confluent's
 * one-byte form, 0x00.
 *
 * An unframed envelope never starts with 0x00 (field number 0 does not exist in protobuf), so
 * a reader tells the two apart by the first byte: es_envelope_decode strips a frame with
 * es_frame_strip, and every reader reads framed and unframed records alike.
 */
#ifndef ESKIT_FRAMING_H
#define ESKIT_FRAMING_H

#include "internal.h"

#include <stddef.h>
#include <stdint.h>

#define ES_FRAME_MAGIC 0x00
#define ES_FRAME_LEN 6 /* magic, id, the index array [0] */

/* Puts the frame of schema id in front of b's bytes. */
es_err es_frame_wrap(es_buf_t *b, uint32_t schema_id, es_error_t *err);

/* When *buf starts with the magic byte, moves *buf and *len past the frame and sets *schema_id
 * (else leaves them, *schema_id 0). ES_EDECODE for a frame cut short or one whose message
 * indexes name another message than the file's first. */
es_err es_frame_strip(const uint8_t **buf, size_t *len, uint32_t *schema_id, es_error_t *err);

#endif
