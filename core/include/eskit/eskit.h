/* eskit: event sourcing and CQRS for C services. One include for the whole API. */
#ifndef ESKIT_H
#define ESKIT_H

#include <eskit/error.h>
#include <eskit/config.h>
#include <eskit/event.h>
#include <eskit/store.h>
#include <eskit/engine.h>
#include <eskit/processor.h>
#include <eskit/projector.h>
#include <eskit/runner.h>
#include <eskit/saga.h>

#define ESKIT_VERSION_MAJOR 0
#define ESKIT_VERSION_MINOR 1
#define ESKIT_VERSION_PATCH 0
#define ESKIT_VERSION_STRING "0.1.0"

#endif
