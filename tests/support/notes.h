/*
 * "notes": the projector the runner tests drive. Events of test.note are
 * rows of notes (v1) or notes_v2 (v2, one more column); the event type picks
 * a behaviour: test.v1.Unknown is an unknown type, test.v1.Flaky fails as
 * transient while notes_transient_left > 0, test.v1.Broken fails until
 * notes_fixed is set.
 */
#ifndef ESKIT_TEST_NOTES_H
#define ESKIT_TEST_NOTES_H

#include <eskit/eskit.h>

extern const es_projector_def notes_v1, notes_v2;
extern int notes_transient_left; /* ES_ERETRY answers still to give */
extern int notes_fixed;          /* test.v1.Broken applies once set */

#endif
