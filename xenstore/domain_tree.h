// The xenstore tree a toolstack writes for a new domain, with libxl's permissions
// (tools/libs/light/libxl_create.c libxl__domain_make, libxl_dom.c build_post):
// /local/domain/<id> owned by dom0 and readable by the guest; control/shutdown, the
// control/feature-* answers, data, drivers, feature, attr, error owned by the guest; device/
// readable; console/ and store/ as the rings were set up. The VMM writes it as dom0.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "abi/result.h"
#include "xenstore/store.h"

namespace xenkvm::xenstore {

struct RingInfo {
  uint64_t ring_ref = 0;  // the ring page's gfn
  uint32_t port = 0;      // the guest's event-channel port
};

struct DomainConfig {
  DomId domid = 1;
  std::string name = "guest";
  std::string uuid = "00000000-0000-0000-0000-000000000001";
  uint64_t max_memory_kib = 0;      // memory/static-max
  uint64_t target_kib = 0;          // memory/target
  uint64_t videoram_kib = 0;        // memory/videoram
  uint32_t vcpus = 1;               // cpu/<n>/availability = online
  std::optional<RingInfo> console;  // console/{ring-ref,port,type,limit}
  std::optional<RingInfo> store;    // store/{ring-ref,port}
};

// Writes /, /local/domain/0 (dom0's home) and the domain's tree through `dom0` (a connection of
// kPrivilegedDomid), in one transaction; introduces the domain (fires @introduceDomain).
Result<> WriteDomainTree(Store& store, ConnId dom0, const DomainConfig& config);

// A PV device pair as libxl adds one: the frontend directory device/<kind>/<devid> owned by the
// guest and readable by the backend (dom0); the backend directory
// /local/domain/0/backend/<kind>/<domid>/<devid> owned by dom0 and readable by the guest; each
// side's entries, plus the cross links (backend, backend-id, frontend, frontend-id) and state.
struct DeviceEntries {
  std::string kind;  // "vbd", "vif", "console", ...
  uint32_t devid = 0;
  std::vector<std::pair<std::string, std::string>> frontend;
  std::vector<std::pair<std::string, std::string>> backend;
};
Result<> AddDevice(Store& store, ConnId dom0, DomId domid, const DeviceEntries& device);

}  // namespace xenkvm::xenstore
