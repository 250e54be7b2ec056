/* A Vulkan layer for the tests: vkAllocateMemory refuses every allocation larger than
 * $GLMV_TEST_VK_ALLOC_LIMIT bytes with VK_ERROR_OUT_OF_DEVICE_MEMORY, as a GPU without room
 * would. Everything else passes through to the driver below (lavapipe in `make test`).
 * Built by tests/test_vulkan.py with the system's Vulkan headers; enabled with VK_LAYER_PATH
 * and VK_INSTANCE_LAYERS=VK_LAYER_GLMV_fail_alloc. */
#include <stdlib.h>
#include <string.h>
#include <vulkan/vulkan.h>
#include <vulkan/vk_layer.h>

#define EXPORT __attribute__((visibility("default")))

static PFN_vkGetInstanceProcAddr next_gipa;
static PFN_vkGetDeviceProcAddr next_gdpa;
static PFN_vkAllocateMemory next_alloc;
static VkDeviceSize limit = 65536;

static VKAPI_ATTR VkResult VKAPI_CALL fail_AllocateMemory(VkDevice d, const VkMemoryAllocateInfo *ai,
                                                          const VkAllocationCallbacks *a, VkDeviceMemory *m) {
    if (ai->allocationSize > limit)
        return VK_ERROR_OUT_OF_DEVICE_MEMORY;
    return next_alloc(d, ai, a, m);
}

static VKAPI_ATTR VkResult VKAPI_CALL layer_CreateInstance(const VkInstanceCreateInfo *ci,
                                                           const VkAllocationCallbacks *a, VkInstance *inst) {
    VkLayerInstanceCreateInfo *link = (VkLayerInstanceCreateInfo *)ci->pNext;
    while (link && !(link->sType == VK_STRUCTURE_TYPE_LOADER_INSTANCE_CREATE_INFO && link->function == VK_LAYER_LINK_INFO))
        link = (VkLayerInstanceCreateInfo *)link->pNext;
    if (!link)
        return VK_ERROR_INITIALIZATION_FAILED;
    next_gipa = link->u.pLayerInfo->pfnNextGetInstanceProcAddr;
    link->u.pLayerInfo = link->u.pLayerInfo->pNext;
    PFN_vkCreateInstance create = (PFN_vkCreateInstance)next_gipa(VK_NULL_HANDLE, "vkCreateInstance");
    return create(ci, a, inst);
}

static VKAPI_ATTR VkResult VKAPI_CALL layer_CreateDevice(VkPhysicalDevice pd, const VkDeviceCreateInfo *ci,
                                                         const VkAllocationCallbacks *a, VkDevice *dev) {
    VkLayerDeviceCreateInfo *link = (VkLayerDeviceCreateInfo *)ci->pNext;
    while (link && !(link->sType == VK_STRUCTURE_TYPE_LOADER_DEVICE_CREATE_INFO && link->function == VK_LAYER_LINK_INFO))
        link = (VkLayerDeviceCreateInfo *)link->pNext;
    if (!link)
        return VK_ERROR_INITIALIZATION_FAILED;
    PFN_vkGetInstanceProcAddr gipa = link->u.pLayerInfo->pfnNextGetInstanceProcAddr;
    next_gdpa = link->u.pLayerInfo->pfnNextGetDeviceProcAddr;
    link->u.pLayerInfo = link->u.pLayerInfo->pNext;
    const char *env = getenv("GLMV_TEST_VK_ALLOC_LIMIT");
    if (env)
        limit = strtoull(env, NULL, 10);
    PFN_vkCreateDevice create = (PFN_vkCreateDevice)gipa(VK_NULL_HANDLE, "vkCreateDevice");
    VkResult r = create(pd, ci, a, dev);
    if (r == VK_SUCCESS)
        next_alloc = (PFN_vkAllocateMemory)next_gdpa(*dev, "vkAllocateMemory");
    return r;
}

EXPORT VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL glmv_GetDeviceProcAddr(VkDevice d, const char *n) {
    if (!strcmp(n, "vkAllocateMemory"))
        return (PFN_vkVoidFunction)fail_AllocateMemory;
    if (!strcmp(n, "vkGetDeviceProcAddr"))
        return (PFN_vkVoidFunction)glmv_GetDeviceProcAddr;
    return next_gdpa(d, n);
}

EXPORT VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL glmv_GetInstanceProcAddr(VkInstance i, const char *n) {
    if (!strcmp(n, "vkCreateInstance"))
        return (PFN_vkVoidFunction)layer_CreateInstance;
    if (!strcmp(n, "vkCreateDevice"))
        return (PFN_vkVoidFunction)layer_CreateDevice;
    if (!strcmp(n, "vkGetInstanceProcAddr"))
        return (PFN_vkVoidFunction)glmv_GetInstanceProcAddr;
    if (!strcmp(n, "vkGetDeviceProcAddr"))
        return (PFN_vkVoidFunction)glmv_GetDeviceProcAddr;
    if (!strcmp(n, "vkAllocateMemory"))
        return (PFN_vkVoidFunction)fail_AllocateMemory;
    return next_gipa(i, n);
}
